import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';
const OTHER = '628001869793';

describe('chatmem merge', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('json');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('asks y/n, then backs up both and leaves INTO with both histories', async () => {
    const before = await sb.json<{ messages: number }>(['show', JOKO]);
    const other = await sb.json<{ messages: number }>(['show', OTHER]);
    expect((await sb.run(['merge', OTHER, JOKO])).code).toBe(2);
    expect((await sb.run(['merge', OTHER, JOKO], { isTTY: true, input: ['n'] })).code).toBe(2);
    const { code, doc } = await sb.json<{ backup: string; record: { history: unknown[] } }>(['merge', OTHER, JOKO, '--yes']);
    expect(code).toBe(0);
    expect(doc.record.history.length).toBe(Math.min(50, before.doc.messages + other.doc.messages));
    expect((await sb.run(['show', OTHER])).code).toBe(3);
    expect(await sb.backupFiles()).toHaveLength(1);
  });
});
