// The two peers of bench/http-load.mjs, in their own process so that they do not share an event loop
// with the load generator: `noop` answers the append route without doing anything, `redis` keeps the
// history in a Redis list (RPUSH + LTRIM to the newest 50 + HSET of the user's hash, one MULTI per message).
// Usage: node bench/http-peers.mjs noop|redis PORT [REDIS_PORT]
import Fastify from 'fastify';
import { Redis } from 'ioredis';

const [mode, port, redisPort] = process.argv.slice(2);
const app = Fastify({ logger: false });
let seq = 0;

if (mode === 'noop') {
  app.post('/v1/users/:id/history', async (req, reply) => reply.status(201).send({ user_id: req.params.id, id: `noop-${++seq}` }));
} else if (mode === 'redis') {
  const redis = new Redis({ port: Number(redisPort), host: '127.0.0.1', enableAutoPipelining: true });
  app.post('/v1/users/:id/history', async (req, reply) => {
    const id = req.params.id;
    const b = req.body;
    if (typeof b !== 'object' || b === null || typeof b.text !== 'string' || (b.role !== 'user' && b.role !== 'bot')) {
      return reply.status(400).send({ error: { code: 'E_RECORD', message: 'bad entry' } });
    }
    const ts = new Date().toISOString();
    const entry = { id: `r-${process.pid}-${++seq}`, role: b.role, text: b.text, ts };
    const m = redis.multi().rpush(`h:${id}`, JSON.stringify(entry)).ltrim(`h:${id}`, -50, -1);
    m.hset(`u:${id}`, b.role === 'user' ? { updated_at: ts, last_answer: b.text } : { updated_at: ts });
    const res = await m.exec();
    if (!res || res.some(([err]) => err)) return reply.status(500).send({ error: { code: 'E_STORE_WRITE', message: 'redis failed' } });
    return reply.status(201).send({ user_id: id, id: entry.id });
  });
} else {
  console.error('usage: http-peers.mjs noop|redis PORT [REDIS_PORT]');
  process.exit(2);
}
await app.listen({ port: Number(port), host: '127.0.0.1' });
process.stdout.write('ready\n');
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
