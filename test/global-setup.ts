// The daemon imports the generated admin page module: build it before any test file loads the server.
export default async function setup(): Promise<void> {
  // A .mjs build script without types: only its one export is used.
  const mod = (await import('../scripts/build-web.mjs' as string)) as { buildWebPage: () => Promise<string> };
  await mod.buildWebPage();
}
