// Writes docs/chatmem.config.schema.json from the zod schema in src/config.ts (run after the build:
// `npm run config-schema`). test/config.test.ts fails when the committed file differs.
import { writeFileSync } from 'node:fs';
import { configJsonSchema } from '../dist/config.js';

const target = new URL('../docs/chatmem.config.schema.json', import.meta.url);
writeFileSync(target, JSON.stringify(configJsonSchema(), null, 2) + '\n');
process.stdout.write(`wrote ${target.pathname}\n`);
