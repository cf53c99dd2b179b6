// The demo page (`mrc-gateway --demo`) driven in headless Chromium: alice on one gateway,
// bob on another, chatting through the page as a person would (typing, clicking) and
// checking what the page shows. tests/it/browser.rs starts the cluster and runs this with:
//
//   MRC_DEMO_0, MRC_DEMO_1  the demo page of each gateway (`http://127.0.0.1:PORT/`)
//   MRC_SCREENSHOT          where to save the PNG of both windows side by side
//   MRC_CHROMIUM            the browser (default /usr/bin/chromium)
//
// Run by hand without them, the test is skipped.

import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import puppeteer from 'puppeteer-core';

const env = process.env;
const skip = env.MRC_DEMO_0 && env.MRC_DEMO_1
  ? false
  : 'no cluster: run `cargo test --test it browser`, which starts one';

/** Chromium's flags: headless, no sandbox (CI runs as root), nothing that phones home. */
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const VIEWPORT = { width: 900, height: 540 };
/** How long the page may take to show what a step expects. */
const STEP_MS = 10000;

let browser;
let profile;
/** The two windows, once open: `{ name, page, problems }`. */
const windows = [];
/** Whether the screenshot was taken; if a step failed first, `after` takes it. */
let photographed = false;

before(async () => {
  if (skip) return;
  profile = mkdtempSync(join(tmpdir(), 'mrc-chromium-'));
  browser = await puppeteer.launch({
    executablePath: env.MRC_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ARGS,
    userDataDir: profile,
    defaultViewport: VIEWPORT,
    // A hung DevTools call fails its step soon rather than after 3 minutes.
    protocolTimeout: 3 * STEP_MS,
    // Chromium can take long to start on a busy 2-core machine (CI runs tests in parallel).
    timeout: 120000,
  });
});

after(async () => {
  try {
    if (windows.length > 0 && !photographed) await screenshot();
  } finally {
    await browser?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  }
});

/** A page in a browser context of its own: its own window, so it is visible (a tab behind
 * another is hidden, and puppeteer's clicks wait forever for it to render), and its own
 * storage, as for a second person. */
async function newWindow() {
  const context = await browser.createBrowserContext();
  return context.newPage();
}

/** Opens the demo page at `url`; anything the page logs as an error fails the test. */
async function open(name, url) {
  const page = await newWindow();
  page.setDefaultTimeout(STEP_MS);
  const problems = [];
  page.on('pageerror', (error) => problems.push(`${name}: ${error.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`${name}: ${m.text()}`));
  await page.goto(url, { waitUntil: 'load' });
  windows.push({ name, page, problems });
  return page;
}

/** Types `text` into the input `#id` (clearing it first). */
async function fill(page, id, text) {
  await page.$eval(`#${id}`, (input) => { input.value = ''; });
  await page.type(`#${id}`, text);
}

/** Waits until `selector` matches an element whose text contains `text`; returns it. */
async function waitText(page, selector, text) {
  const handle = await page.waitForFunction(
    (s, t) => [...document.querySelectorAll(s)].find((e) => e.textContent.includes(t)),
    { timeout: STEP_MS },
    selector,
    text,
  );
  return handle.asElement();
}

async function logIn(page, user) {
  await fill(page, 'login-user', user);
  await page.click('#login-button');
  await page.waitForSelector('#status[data-state="ready"]');
  assert.match(await page.$eval('#status', (e) => e.textContent), new RegExp(`^${user} on `));
}

/** Watches `user` and waits until the contact list shows them `state`. */
async function watch(page, user, state) {
  await fill(page, 'contact-user', user);
  await page.click('#contact-add');
  await page.waitForSelector(`#contacts li[data-user="${user}"][data-state="${state}"]`);
}

/** Sends `text` from the form; waits for its report and returns it. */
async function send(page, kind, to, text) {
  await page.select('#send-kind', kind);
  await fill(page, 'send-to', to);
  await fill(page, 'send-text', text);
  await page.click('#send-button');
  const line = await waitText(page, '#messages li.out[data-report]', text);
  return line.evaluate((li) => li.dataset.report);
}

/** Both windows side by side, each under its name, as one PNG at $MRC_SCREENSHOT. */
async function screenshot() {
  const path = env.MRC_SCREENSHOT;
  photographed = true;
  if (!path) return;
  const shots = [];
  for (const { name, page } of windows) {
    const png = await page.screenshot({ encoding: 'base64' });
    shots.push(`<figure><figcaption>${name}</figcaption><img src="data:image/png;base64,${png}"></figure>`);
  }
  const sheet = await newWindow();
  await sheet.setViewport({ width: VIEWPORT.width * windows.length + 48, height: 200 });
  await sheet.setContent(`<style>body{margin:0;padding:8px;display:flex;gap:16px;background:#d1d5db;font:13px sans-serif}
    figure{margin:0}figcaption{padding:2px 0 6px}img{display:block;box-shadow:0 1px 4px #0004}</style>${shots.join('')}`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, await sheet.screenshot({ fullPage: true }));
}

test('alice and bob chat through the demo page on two gateways', { skip }, async (t) => {
  const alice = await open('alice on gateway 0', env.MRC_DEMO_0);
  const bob = await open('bob on gateway 1', env.MRC_DEMO_1);
  // The page, its script and the client's modules all come from the gateway.
  assert.equal(await alice.title(), 'MRC demo');
  await alice.waitForFunction(() => document.getElementById('where').textContent !== '');

  await t.test('alice logs in and sees bob offline', async () => {
    await logIn(alice, 'alice');
    await watch(alice, 'bob', 'offline');
  });

  await t.test('bob logs in; each sees the other online', async () => {
    await logIn(bob, 'bob');
    await alice.waitForSelector('#contacts li[data-user="bob"][data-state="online"]');
    await watch(bob, 'alice', 'online');
  });

  await t.test('alice sends bob a message, bob replies', async () => {
    assert.equal(await send(alice, 'user', 'bob', 'Hi Bob, over here on gateway 0!'), 'delivered');
    const got = await waitText(bob, '#messages li.in', 'Hi Bob, over here on gateway 0!');
    assert.equal(await got.evaluate((li) => li.dataset.from), 'alice');

    assert.equal(await send(bob, 'user', 'alice', 'Hello Alice, bob from gateway 1.'), 'delivered');
    await waitText(alice, '#messages li.in[data-from="bob"]', 'Hello Alice, bob from gateway 1.');
  });

  await t.test('alice creates a group and adds bob; both send to it', async () => {
    await fill(alice, 'group-name', 'team');
    await alice.click('#group-create');
    await alice.waitForSelector('#groups li[data-group="team"][data-size="1"]');
    // The create form fills in the group of the add-member form.
    assert.equal(await alice.$eval('#member-group', (e) => e.value), 'team');
    await fill(alice, 'member-user', 'bob');
    await alice.click('#member-add');
    await alice.waitForSelector('#groups li[data-group="team"][data-size="2"]');

    assert.equal(await send(alice, 'group', 'team', 'Welcome to #team, Bob.'), 'bob: delivered');
    const got = await waitText(bob, '#messages li.in[data-group="team"]', 'Welcome to #team, Bob.');
    assert.equal(await got.evaluate((li) => li.dataset.from), 'alice');
    // A group message shows its group in bob's list; clicking it aims the send form at it.
    await bob.click('#groups li[data-group="team"]');
    assert.equal(await bob.$eval('#send-kind', (e) => e.value), 'group');
    assert.equal(await send(bob, 'group', 'team', 'Thanks! Glad to be here.'), 'alice: delivered');
    await waitText(alice, '#messages li.in[data-group="team"][data-from="bob"]', 'Thanks! Glad to be here.');
  });

  await t.test('the pages show no errors', async () => {
    for (const { page, problems } of windows) {
      assert.equal(await page.$eval('#error', (e) => e.textContent), '');
      assert.deepEqual(problems, []);
    }
    await screenshot();
  });

  await t.test('bob logs out; alice sees him offline and her message to him too', async () => {
    await bob.click('#logout');
    await bob.waitForSelector('#login:not([hidden])');
    await alice.waitForSelector('#contacts li[data-user="bob"][data-state="offline"]');
    assert.equal(await send(alice, 'user', 'bob', 'Are you still there?'), 'offline');
  });
});
