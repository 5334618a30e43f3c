// The Gymie-Client test flows (docs/protocols.md §1.10) against a running farm.
// usage: node --experimental-websocket flows.mjs ws://127.0.0.1:PORT/gym ws://127.0.0.1:DEADPORT/gym
import { ConnectFailed, ConnectionClosed, Gymie } from './gymie_client.mjs';

const [url, deadUrl] = process.argv.slice(2);
let passed = 0, failed = 0;
const assert = (cond, what) => { if (!cond) throw new Error(`assertion failed: ${what}`); };

async function test(name, fn) {
  const gymie = new Gymie();
  try {
    await fn(gymie);
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${e && e.stack || e}`);
  } finally {
    gymie.close();
  }
}

await test('Gymie#connect', async (g) => { await g.connect(url); });
await test('Gymie#connect server down', async (g) => {
  let err = null;
  try { await g.connect(deadUrl); } catch (e) { err = e; }
  assert(err instanceof ConnectFailed, 'ConnectFailed');
});
await test('Gymie#close', async (g) => { await g.connect(url); g.close(); });
await test('Gymie#make', async (g) => {
  await g.connect(url);
  const env = await g.make('CartPole-v1');
  assert(typeof env.instanceId === 'string' && /^[0-9a-f]{32}$/.test(env.instanceId), 'id');
});
await test('Env#reset', async (g) => {
  await g.connect(url);
  const obs = await (await g.make('CartPole-v1')).reset();
  assert(Array.isArray(obs) && obs.length > 0, 'non-empty array');
});
await test('Env#step valid', async (g) => {
  await g.connect(url);
  const env = await g.make('CartPole-v1');
  await env.reset();
  const [obs, reward, done, info] = await env.step(0);
  assert(Array.isArray(obs) && typeof reward === 'number' && typeof done === 'boolean' && typeof info === 'object', 'types');
});
await test('Env#step invalid', async (g) => {
  await g.connect(url);
  const env = await g.make('CartPole-v1');
  await env.reset();
  let err = null;
  try { await env.step(-123); } catch (e) { err = e; }
  assert(err instanceof ConnectionClosed && err.message === '[1007] Action `-123` is wrong', String(err && err.message));
});
await test('Env#observationSpace', async (g) => {
  await g.connect(url);
  const s = await (await g.make('CartPole-v1')).observationSpace();
  assert(s.name === 'Box' && Array.isArray(s.low) && Array.isArray(s.high), 'Box');
  assert(s.low.every((lo, i) => lo <= s.high[i]), 'low <= high');
});
await test('Env#actionSpace discrete', async (g) => {
  await g.connect(url);
  const s = await (await g.make('CartPole-v1')).actionSpace();
  assert(s.name === 'Discrete' && s.n === 2, 'Discrete(2)');
});
await test('Env#actionSpace continuous', async (g) => {
  await g.connect(url);
  const s = await (await g.make('MountainCarContinuous-v0')).actionSpace();
  assert(s.name === 'Box' && s.shape[0] === 1, 'Box(1)');
});
await test('Env#actionSample discrete', async (g) => {
  await g.connect(url);
  const env = await g.make('CartPole-v1');
  const n = (await env.actionSpace()).n;
  const a = await env.actionSample();
  assert(Number.isInteger(a) && a >= 0 && a < n, `0 <= ${a} < ${n}`);
});
await test('Env#actionSample continuous', async (g) => {
  await g.connect(url);
  const env = await g.make('MountainCarContinuous-v0');
  const s = await env.actionSpace();
  const a = await env.actionSample();
  assert(a.every((x, i) => s.low[i] <= x && x < s.high[i]), 'low <= a < high');
});
await test('Env#close', async (g) => {
  await g.connect(url);
  assert(await (await g.make('CartPole-v1')).close(), 'truthy');
});
await test('Env - Connection closed', async (g) => {
  await g.connect(url);
  const env = await g.make('CartPole-v1');
  await env.close();
  let err = null;
  try { await env.reset(); } catch (e) { err = e; }
  assert(err instanceof ConnectionClosed && err.message === `[1007] Instance \`${env.instanceId}\` not found`, String(err && err.message));
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
