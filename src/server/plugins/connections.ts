import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { globalPlugin } from '../plugin.js';

export type ConnectionsOptions = { connectionTimeout: number };

/** Sockets that send nothing, and sockets still open when the daemon stops. */
export const connectionsPlugin = globalPlugin<ConnectionsOptions>(async (app, { connectionTimeout }) => {
  // A connection that sends nothing is closed after connectionTimeout. The clock stops when its first request
  // arrives: from then on Node's request, headers and keep-alive clocks apply, and an answer may take its time.
  app.server.on('connection', (socket: Socket) => socket.setTimeout(connectionTimeout));
  // Only the first request of a socket finds the clock set (Node clears its own keep-alive clock itself).
  app.server.on('request', (req: IncomingMessage) => {
    if (req.socket.timeout !== 0) req.socket.setTimeout(0);
  });

  // close() drops only the keep-alive sockets idle at that moment; a socket whose request was in flight would
  // stay open after its answer and hold the shutdown until the client lets go. Answers during close end the socket.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // A callback hook: it runs on every answer, and a promise each costs more than the check.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (closing) void reply.header('connection', 'close');
    done(null, payload);
  });
});
