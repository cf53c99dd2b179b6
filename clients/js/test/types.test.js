// The hand-written types (src/index.d.ts) against a TypeScript user's code (test/types.ts),
// and the JSDoc of src/*.js (checkJs): TypeScript must accept both.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

test('the type definitions match how the client is used', async () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const project = fileURLToPath(new URL('tsconfig.json', import.meta.url));
  const run = promisify(execFile)(process.execPath, [tsc, '-p', project]);
  const { stdout, stderr } = await run.catch((failure) => failure);
  assert.equal(`${stdout}${stderr}`, '', 'tsc reported errors');
});
