// A small Gymie client written for gymfarm's tests, with the Gymie-Client 0.5.1 semantics:
// one pending request at a time (a single Deferred, no request ids), replies matched by order,
// `make` taking the raw frame text as the id, every other reply JSON.parse'd, and a close
// rejecting the pending request with ConnectionClosed("[code] reason").
// Runs on Node's built-in WebSocket (node --experimental-websocket on Node 20).

export class ConnectFailed extends Error {}
export class NoConnected extends Error {}
export class ConnectionClosed extends Error {}
export class ConnectionError extends Error {}

class Deferred {
  constructor() {
    this.promise = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject; });
  }
}

class Requester {
  constructor(ws) {
    this.ws = ws;
    this.incoming = null;
    ws.addEventListener('message', (ev) => this.incoming && this.incoming.resolve(String(ev.data)));
    ws.addEventListener('close', (ev) => this.incoming && this.incoming.reject(new ConnectionClosed(`[${ev.code}] ${ev.reason}`)));
    ws.addEventListener('error', () => this.incoming && this.incoming.reject(new ConnectionError('connection error')));
  }
  request(method, params) {
    this.incoming = new Deferred();  // replaces any earlier pending request, as the original does
    this.ws.send(JSON.stringify({ method, params }));
    return this.incoming.promise;
  }
}

export class Env {
  constructor(requester, instanceId) { this.requester = requester; this.instanceId = instanceId; }
  async call(method, extra = {}) {
    return JSON.parse(await this.requester.request(method, { ...extra, instance_id: this.instanceId }));
  }
  step(action) { return this.call('step', { action }); }
  reset() { return this.call('reset'); }
  observationSpace() { return this.call('observation_space'); }
  actionSpace() { return this.call('action_space'); }
  actionSample() { return this.call('action_sample'); }
  close() { return this.call('close'); }
}

export class Gymie {
  connect(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.addEventListener('open', () => { this.ws = ws; this.requester = new Requester(ws); resolve(this); }, { once: true });
      ws.addEventListener('error', () => { if (!this.ws) reject(new ConnectFailed(`cannot connect to ${url}`)); }, { once: true });
    });
  }
  async make(envId, seed) {
    if (!this.requester) throw new NoConnected('not connected');
    const params = { env_id: envId };
    if (seed !== undefined) params.seed = seed;
    const id = await this.requester.request('make', params);
    return new Env(this.requester, id);
  }
  close(code, reason) { if (this.ws) this.ws.close(code, reason); }
}
