#!/usr/bin/env node
import { runMain } from './main.js';

// `chatmem users | head` closes the pipe early; that is the reader's choice, not a failure.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await runMain(process.argv.slice(2), {
  isTTY: process.stdin.isTTY === true && process.stderr.isTTY === true,
});
