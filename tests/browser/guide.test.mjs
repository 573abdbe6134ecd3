// docs/CLIENT_GUIDE.md quotes the dashboard's functions: each of its JavaScript blocks must still
// be, word for word, in crates/server/assets/index.html.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { INDEX_HTML, ROOT } from './helpers.mjs';

test('the client guide quotes the page as it is', () => {
  const guide = fs.readFileSync(path.join(ROOT, 'docs', 'CLIENT_GUIDE.md'), 'utf8');
  // The script's top-level functions are indented by two spaces inside its IIFE.
  const page = fs.readFileSync(INDEX_HTML, 'utf8').split('\n').map((l) => l.replace(/^ {2}/, '')).join('\n');
  const blocks = [...guide.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length >= 10, `found ${blocks.length} code blocks`);
  for (const block of blocks) {
    assert.ok(page.includes(block), `docs/CLIENT_GUIDE.md quotes code that index.html no longer has:\n${block}`);
  }
});
