import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, emitAck } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

// Text PostgreSQL cannot store (U+0000) and strings that are not Unicode (lone surrogates)
// are the client's mistake: 400 VALIDATION naming the field, nothing changed — never a 500.
describe('hostile strings and bytes at the edges', () => {
  let hub: TestHub;
  let operator: string;
  let runId: string;

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
    runId = (await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' }, title: 'kept' })).body.id as string;
  });
  afterAll(async () => {
    await hub?.stop();
  });

  /** Every row of the tables a command could touch, as text: "nothing changed" means equal contents. */
  const snapshot = async () => {
    const out: string[] = [];
    for (const t of ['runs', 'live_sessions', 'audit_events', 'operator_messages', 'approvals']) {
      out.push(JSON.stringify(await em(hub.orm).execute(`select * from ${t} order by 1`)));
    }
    return out.join('\n');
  };

  it('NUL or a lone surrogate in any string field or key is 400 VALIDATION naming it; no row changes', async () => {
    const before = await snapshot();
    const cases: Array<[string, string, unknown, RegExp]> = [
      ['POST', '/api/task-runs', { command: { script: 'true' }, title: 'a\u0000b' }, /"title": contains U\+0000/],
      ['POST', '/api/task-runs', { command: { script: 'true' }, labels: { team: 'x\u0000' } }, /"labels.team"/],
      ['POST', '/api/task-runs', { command: { script: 'true' }, labels: { ['k\u0000']: 'v' } }, /key that contains U\+0000/],
      ['POST', '/api/task-runs', { command: { script: 'true' }, env: { A: 'v\u0000' } }, /"env.A"/],
      ['POST', '/api/task-runs', { command: { argv: ['echo', '\ud800'] } }, /"command.argv.1": contains a lone surrogate/],
      ['POST', `/api/task-runs/${runId}/cancel`, { reason: 'stop\u0000now' }, /"reason"/],
      // Single-line fields refuse control characters (a title or label is shown on one line, also in terminals).
      ['POST', '/api/task-runs', { command: { script: 'true' }, title: 'a\u001b[2Jforged\nline' }, /"title": must be one line without control characters/],
      ['POST', '/api/task-runs', { command: { script: 'true' }, labels: { team: 'x\ny' } }, /"labels.team": must be one line/],
      ['POST', `/api/task-runs/${runId}/operator-messages`, { message: 'hi\udc00' }, /"message": contains a lone surrogate/],
    ];
    for (const [method, path, body, message] of cases) {
      const res = await api(hub.url, operator, method, path, body);
      expect({ path, status: res.status, code: res.body?.error?.code }).toEqual({ path, status: 400, code: 'VALIDATION' });
      expect(res.body.error.message).toMatch(message);
    }
    const badPath = await api(hub.url, operator, 'GET', `/api/task-runs/${encodeURIComponent('x\u0000')}`);
    expect(badPath.status).toBe(400);
    expect(await snapshot()).toBe(before);
  });

  it('a body that is not valid UTF-8 is 400, not stored as U+FFFD', async () => {
    const before = await snapshot();
    const bytes = Buffer.concat([Buffer.from('{"command":{"script":"true"},"title":"bad '), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]);
    const res = await fetch(`${hub.url}/api/task-runs`, { method: 'POST', headers: { authorization: `Bearer ${operator}`, 'content-type': 'application/json' }, body: bytes });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: 'VALIDATION', message: 'request body is not valid UTF-8' } });
    expect(await snapshot()).toBe(before);
  });

  it('socket events with such strings are refused the same way, and the socket stays usable', async () => {
    const socket = await connect(hub.url, '/dashboard', operator);
    const bad = await emitAck(socket, 'run:subscribe', { runId: `${runId}\u0000` });
    expect(bad).toMatchObject({ ok: false, error: { code: 'VALIDATION' } });
    expect((bad as { error: { message: string } }).error.message).toMatch(/contains U\+0000/);
    expect((await emitAck(socket, 'run:subscribe', { runId })).ok).toBe(true);
    socket.close();
  });
});
