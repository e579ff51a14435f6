// Makes embedgate.js, the classic script (defines window.EmbedGate), from
// the ES module embedgate.mjs: `node build.mjs`. The gateway's tests check
// that the committed file is what this makes.
import { readFileSync, writeFileSync } from 'node:fs';

const here = new URL('.', import.meta.url);
const module = readFileSync(new URL('embedgate.mjs', here), 'utf8');
const body = module
  .replace('export function mount(', 'function mount(')
  .replace('export default { mount };\n', '');
const classic =
  '// Generated from embedgate.mjs by build.mjs; edit that file, then run `node build.mjs`.\n' +
  '(function () {\n' +
  "'use strict';\n" +
  body +
  'window.EmbedGate = { mount: mount };\n' +
  '})();\n';
writeFileSync(new URL('embedgate.js', here), classic);
