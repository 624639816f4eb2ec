import * as net from 'node:net';
import S3rver from 's3rver';
import { tempDir } from './tmp.js';

export const S3_KEY = 'S3RVER';
export const S3_SECRET = 'S3RVER';

/** A real fake S3 (s3rver) on loopback, with `bucket` created, in a temp directory. */
export async function startS3(bucket = 'chatmem-test'): Promise<{ endpoint: string; close(): Promise<void> }> {
  const { dir, cleanup } = await tempDir('chatmem-s3-');
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket }] });
  const address = (await server.run()) as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    close: async () => {
      await server.close();
      await cleanup();
    },
  };
}

/**
 * A TCP relay to `port` that dies after forwarding `limit` bytes of a request: an endpoint that goes away
 * in the middle of an upload.
 */
export async function dyingRelay(port: number, limit: number): Promise<{ endpoint: string; close(): Promise<void>; heal(): void }> {
  const sockets = new Set<net.Socket>();
  // heal(): the endpoint comes back; connections opened from then on pass everything.
  let healed = false;
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(upstream);
    let sent = 0;
    client.on('data', (d: Buffer) => {
      sent += d.length;
      if (!healed && sent > limit) {
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address() as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${a.port}`,
    heal: () => {
      healed = true;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
