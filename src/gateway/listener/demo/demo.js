// The demo page's script (src/gateway/listener/demo.rs serves it at /demo/demo.js): a chat
// over the JavaScript client, which the gateway serves unchanged from clients/js/src.
// Everything shown comes from the client's events and promises. Text from the network or
// the user goes into the page through textContent only, never as HTML.

import { MrcClient } from './client/index.js';

const $ = (id) => document.getElementById(id);

/** The gateway that served this page: its WebSocket door is on the same listener. */
const WS_URL = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;

/** @type {MrcClient | undefined} the logged-in (or logging-in) client */
let mrc;

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function showError(error) {
  $('error').textContent = error ? `${error.code ?? 'error'}: ${error.message}` : '';
}

/** Runs a form's action on submit; a rejected promise shows as the error line. */
function onSubmit(id, action) {
  $(id).addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(undefined);
    try {
      await action();
    } catch (error) {
      showError(error);
    }
  });
}

/** The text of a message body: `{ text }` as sent by this page, or the JSON of others. */
function bodyText(body) {
  return typeof body?.text === 'string' ? body.text : JSON.stringify(body);
}

/** Appends a line to the message list: `in`, `out` or `note` (which has no `meta`). */
function addLine(kind, meta, text, data = {}) {
  const li = document.createElement('li');
  li.className = kind;
  Object.assign(li.dataset, data);
  if (meta) {
    const head = document.createElement('span');
    head.className = 'meta';
    head.textContent = meta;
    li.append(head);
  }
  li.append(text);
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
  return li;
}

const time = (ts) => new Date(ts).toLocaleTimeString();

function onMessage(m) {
  const where = m.group ? ` in #${m.group}` : m.broadcast ? ' (broadcast)' : '';
  const data = { from: m.from ?? '', id: m.id };
  if (m.group) {
    data.group = m.group;
    showGroup(m.group);
  }
  addLine('in', `${m.from ?? 'backend'}${where} · ${time(m.ts)}`, bodyText(m.body), data);
}

/** What became of a message: the outcome for one receiver, else each receiver's (or, for
 * a large group, the counts). */
function summary(report) {
  const entries = Object.entries(report.status ?? report.counts ?? {});
  if (!report.group && entries.length === 1) return entries[0][1];
  return entries.map(([key, value]) => `${key}: ${value}`).join(', ') || 'no receivers';
}

/** Finds (or adds) the list item for `key` in list `listId`. */
function item(listId, attribute, key) {
  const list = $(listId);
  for (const li of list.children) if (li.dataset[attribute] === key) return li;
  const li = document.createElement('li');
  li.dataset[attribute] = key;
  const dot = document.createElement('span');
  dot.className = 'dot';
  const name = document.createElement('span');
  name.className = 'name';
  const detail = document.createElement('span');
  detail.className = 'detail';
  li.append(dot, name, detail);
  list.append(li);
  return li;
}

/** Shows a watched user's state: `online`, `offline`, `hidden` (presence policy), `…`. */
function showContact(user, state) {
  const li = item('contacts', 'user', user);
  li.dataset.state = state;
  li.querySelector('.name').textContent = user;
  li.querySelector('.detail').textContent = state;
}

function showGroup(group, size) {
  const li = item('groups', 'group', group);
  li.querySelector('.name').textContent = `#${group}`;
  if (size !== undefined) {
    li.dataset.size = String(size);
    li.querySelector('.detail').textContent = `${size} member${size === 1 ? '' : 's'}`;
  }
}

/** Points the send form (and, for a group, the add-member form) at a contact or group. */
function chooseTarget(event) {
  const li = event.target.closest('li');
  if (!li) return;
  $('send-kind').value = li.dataset.group ? 'group' : 'user';
  $('send-to').value = li.dataset.group ?? li.dataset.user;
  if (li.dataset.group) $('member-group').value = li.dataset.group;
  $('send-text').focus();
}

function showChat(chatting) {
  $('login').hidden = chatting;
  $('chat').hidden = !chatting;
}

async function logIn() {
  const user = $('login-user').value.trim();
  const token = $('login-token').value.trim();
  if (!user && !token) throw new Error('enter a user id (or a token)');
  const client = new MrcClient(WS_URL, {
    ...(user && { user }),
    ...(token && { token }),
  });
  mrc = client;
  client.on('welcome', (w) => setStatus('ready', `${w.user} on ${w.gateway}`));
  client.on('close', (c) => {
    if (c.willReconnect) setStatus('connecting', `reconnecting (${c.reason})`);
    else setStatus('idle', `signed out (${c.reason})`);
  });
  client.on('message', onMessage);
  client.on('presence', (p) => showContact(p.user, p.state));
  client.on('kicked', () => addLine('note', '', 'signed in elsewhere: this session was replaced'));
  client.on('error', showError);
  setStatus('connecting', 'connecting…');
  showChat(true);
  try {
    await client.connect();
  } catch (error) {
    if (mrc === client) logOut();
    throw error;
  }
  const { groups } = await client.groupList();
  for (const group of groups) showGroup(group);
}

function logOut() {
  mrc?.close();
  mrc = undefined;
  for (const id of ['messages', 'contacts', 'groups']) $(id).replaceChildren();
  setStatus('idle', 'signed out');
  showChat(false);
}

async function watch() {
  const user = $('contact-user').value.trim();
  if (!user) return;
  showContact(user, '…');
  $('contact-user').value = '';
  const result = await mrc.subscribePresence([user]);
  const found = result.users[user];
  showContact(user, found ? (found.online ? 'online' : 'offline') : 'hidden');
}

async function createGroup() {
  const group = $('group-name').value.trim();
  if (!group) return;
  const result = await mrc.groupCreate(group);
  $('group-name').value = '';
  $('member-group').value = result.group;
  showGroup(result.group, result.size);
  addLine('note', '', `you created #${result.group}`);
}

async function addMember() {
  const group = $('member-group').value.trim();
  const user = $('member-user').value.trim();
  if (!group || !user) return;
  const result = await mrc.groupAdd(group, [user]);
  $('member-user').value = '';
  showGroup(result.group, result.size);
  addLine('note', '', `you added ${user} to #${result.group}`);
}

async function send() {
  const kind = $('send-kind').value;
  const to = $('send-to').value.trim();
  const text = $('send-text').value;
  if (!to || !text) return;
  $('send-text').value = '';
  const target = kind === 'group' ? `#${to}` : to;
  const data = kind === 'group' ? { group: to } : { to };
  const line = addLine('out', `to ${target} · sending…`, text, data);
  const body = { text };
  let outcome;
  try {
    const report = kind === 'group' ? await mrc.groupSend(to, body) : await mrc.send(to, body);
    outcome = summary(report);
  } catch (error) {
    outcome = `failed (${error.code ?? error.message})`;
    throw error;
  } finally {
    line.dataset.report = outcome;
    line.querySelector('.meta').textContent = `to ${target} · ${outcome}`;
  }
}

$('where').textContent = `gateway ${location.host}`;
$('login-user').value = new URLSearchParams(location.search).get('user') ?? '';
onSubmit('login-form', logIn);
onSubmit('contact-form', watch);
onSubmit('group-form', createGroup);
onSubmit('member-form', addMember);
onSubmit('send-form', send);
$('logout').addEventListener('click', logOut);
$('contacts').addEventListener('click', chooseTarget);
$('groups').addEventListener('click', chooseTarget);
