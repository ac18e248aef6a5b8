import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { OperatorMessage } from '@handoff/shared';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Flags for a closed network (no background lookups) and running as root.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// STAND-IN: no tmate relay is reachable here, so the worker's tmate is test/fixtures/fake-tmate,
// which speaks the CLI subset the worker uses and reports fixed fake attach strings.
const FAKE_TMATE = path.resolve('test/fixtures/fake-tmate');

describe('run controls in a real browser: control, messages, live sessions, approvals, needs-operator', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let page: Page;
  let adminPage: Page;
  let operator: string;
  let admin: string;
  let runId: string;
  const runs: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub({
      env: {
        PAUSE_SOFT_GRACE: '2s', SWEEP_INTERVAL: '100ms', LIVE_PROVIDER_START_TIMEOUT: '5s',
        // Sessions live the default 60m; the grace warning comes 8 s after a share starts.
        LIVE_GRACE: '3592s',
      },
    });
    operator = await hub.token('operator');
    admin = await hub.token('admin');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`e2e-ctl-${randomBytes(3).toString('hex')}`), capacity: 3, env: { TMATE_BIN: FAKE_TMATE } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // A second user in a context of its own (its own localStorage token).
    adminPage = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  });
  afterAll(async () => {
    for (const id of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {}).catch(() => undefined);
    await browser?.close();
    const runDir = worker?.runDir;
    await worker?.stop();
    // The runs' tmux servers and share processes live under the worker's run dir.
    if (runDir) expect(await untilNoProcess(runDir)).toEqual([]);
    await hub?.stop();
  });

  const login = async (p: Page, token: string) => {
    await p.goto(hub.url);
    await p.getByTestId('token-input').fill(token);
    await p.getByTestId('login-button').click();
    await p.getByTestId('runs-list').waitFor({ timeout: 10_000 });
  };
  const start = async (script: string, title: string) => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script }, title });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    runs.push(res.body.id as string);
    return res.body.id as string;
  };
  const controlState = () => page.getByTestId('control-state');
  const webSession = () => page.locator('[data-testid="session-item"][data-provider="web"]').first();

  it('an operator opens a running run and sees its control state, live session and empty messages', async () => {
    await login(page, operator);
    runId = await start('while true; do echo tick; sleep 0.2; done', 'e2e controls');
    const row = page.locator(`[data-testid="run-row"][data-run-id="${runId}"]`);
    await expect.poll(() => row.getAttribute('data-status'), { timeout: 15_000 }).toBe('running');
    await row.click();

    await expect.poll(() => controlState().textContent(), { timeout: 10_000 }).toBe('agent');
    expect(await controlState().getAttribute('data-applied')).toBe('true');
    await expect.poll(() => webSession().getAttribute('data-status'), { timeout: 10_000 }).toBe('READY');
    const text = () => page.evaluate(() => (window as unknown as { __handoffTerminalText?: () => string }).__handoffTerminalText?.() ?? '');
    await expect.poll(text, { timeout: 10_000 }).toContain('tick');
    expect(await page.getByTestId('message-item').count()).toBe(0);
  });

  it('sends messages from the composer (Enter sends, Shift+Enter is a newline); they are listed once and delivered', async () => {
    const input = page.getByTestId('message-input');
    await input.fill('please look at the flaky test');
    await expect.poll(() => page.getByTestId('message-counter').textContent()).toBe('29 / 4000');
    await input.press('Enter');
    const items = page.getByTestId('message-item');
    await expect.poll(() => items.count(), { timeout: 10_000 }).toBe(1);
    expect(await items.first().textContent()).toContain('please look at the flaky test');
    // The push can list the message before the POST answers; the box clears on the answer.
    await expect.poll(() => input.inputValue(), { timeout: 10_000 }).toBe('');

    await input.pressSequentially('line one');
    await input.press('Shift+Enter');
    await input.pressSequentially('line two');
    expect(await input.inputValue()).toBe('line one\nline two');
    // Held in flight: what is typed meanwhile stays in the box once the message is accepted.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route('**/operator-messages', async (route) => {
      if (route.request().method() === 'POST') await held;
      await route.continue();
    });
    await page.getByTestId('message-send').click();
    await expect.poll(async () => (await page.getByTestId('message-send').textContent())?.trim()).toBe('Sending…');
    await input.pressSequentially(' p.s.');
    release();
    await expect.poll(() => items.count(), { timeout: 10_000 }).toBe(2);
    await expect.poll(() => input.inputValue(), { timeout: 10_000 }).toBe('p.s.');
    await page.unroute('**/operator-messages');
    await input.fill('');
    expect(await items.nth(1).innerText()).toContain('line one\nline two');

    const listed = await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/operator-messages`);
    expect((listed.body.messages as OperatorMessage[]).map((m) => m.message)).toEqual(['please look at the flaky test', 'line one\nline two']);
    // The worker acks each message once it is in the run's inbox; the list catches up.
    await expect.poll(() => items.evaluateAll((els) => els.map((e) => e.getAttribute('data-delivered'))), { timeout: 15_000 }).toEqual(['true', 'true']);
    await page.getByTestId('message-delivered').first().waitFor();
  });

  it('Pause now pauses the run (applied by the worker), Resume gives it back to the agent', async () => {
    await page.getByTestId('pause-hard-button').click();
    await expect.poll(() => controlState().textContent(), { timeout: 10_000 }).toBe('paused');
    expect(await controlState().getAttribute('data-mode')).toBe('hard');
    await expect.poll(() => controlState().getAttribute('data-applied'), { timeout: 15_000 }).toBe('true');
    // While paused, Pause is not offered at all: Resume is the primary action.
    expect(await page.getByTestId('pause-button').count()).toBe(0);
    expect(await page.getByTestId('control-panel').getAttribute('data-primary')).toBe('resume');

    await page.getByTestId('resume-button').click();
    await expect.poll(() => controlState().textContent(), { timeout: 10_000 }).toBe('agent');
    await expect.poll(() => controlState().getAttribute('data-applied'), { timeout: 15_000 }).toBe('true');
    const run = await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`);
    expect(run.body.control).toMatchObject({ state: 'agent', seq: 2, appliedSeq: 2 });
  });

  it('a tmate share waits for an admin; approved on the approvals page, it becomes READY with its RO attach string', async () => {
    await page.getByTestId('share-tmate').click();
    const pending = page.getByTestId('pending-approval');
    await pending.waitFor({ timeout: 10_000 });
    expect(await pending.textContent()).toMatch(/waiting for approval \(request [0-9a-f-]{36}\)/);
    const approvalId = await pending.getAttribute('data-approval-id');
    // The requester sees the count but cannot decide their own request.
    await expect.poll(() => page.getByTestId('approvals-link').textContent(), { timeout: 10_000 }).toMatch(/Approvals\s*\(1\)/);

    await login(adminPage, admin);
    await expect.poll(() => adminPage.getByTestId('approvals-link').textContent(), { timeout: 10_000 }).toMatch(/\(1\)/);
    await adminPage.getByTestId('approvals-link').click();
    const item = adminPage.locator(`[data-testid="approval-item"][data-approval-id="${approvalId}"]`);
    await item.waitFor({ timeout: 10_000 });
    expect(await item.textContent()).toContain('session.create.external');
    await item.getByTestId('approval-reason').fill('short debugging session');
    await item.getByTestId('approve-button').click();
    await expect.poll(() => item.getAttribute('data-status'), { timeout: 15_000 }).toBe('approved');
    await expect.poll(() => adminPage.getByTestId('approvals-link').textContent(), { timeout: 10_000 }).toMatch(/\(0\)/);

    // Back on the operator's run page, pushed: the count drops and the share comes up.
    await expect.poll(() => page.getByTestId('approvals-link').textContent(), { timeout: 10_000 }).toMatch(/\(0\)/);
    await expect.poll(() => pending.getAttribute('data-status'), { timeout: 10_000 }).toBe('approved');
    const tmate = page.locator('[data-testid="session-item"][data-provider="tmate"]');
    await expect.poll(() => tmate.getAttribute('data-status'), { timeout: 15_000 }).toBe('READY');
    expect(await tmate.getByTestId('attach-ro').first().textContent()).toBe('ssh ro-FAKE@fake.relay');
    expect(await tmate.textContent()).not.toContain('SECRET');
  });

  it('the grace warning shows a toast; +30 min extends the session and settles the warning', async () => {
    const before = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions.find((s: { provider: string }) => s.provider === 'web');
    const toast = page.locator(`[data-testid="grace-toast"][data-session-id="${before.id}"]`);
    await toast.waitFor({ timeout: 15_000 });
    expect(await toast.textContent()).toMatch(/live view in the browser ends in \d+m/);
    await webSession().getByTestId('extend-session').click();
    await toast.waitFor({ state: 'detached', timeout: 10_000 });
    await expect
      .poll(async () => {
        const after = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions.find((s: { id: string }) => s.id === before.id);
        return new Date(after.expiresAt).getTime() - new Date(before.expiresAt).getTime();
      }, { timeout: 10_000 })
      .toBeGreaterThan(29 * 60_000);
  });

  it('revoking the web share stops the terminal behind a "revoked" overlay', async () => {
    await webSession().getByTestId('revoke-session').click();
    const closed = page.getByTestId('term-closed');
    await closed.waitFor({ timeout: 10_000 });
    expect(await closed.textContent()).toMatch(/live view revoked: revoked by operator-/i);
    await expect.poll(() => webSession().getAttribute('data-status'), { timeout: 10_000 }).toBe('REVOKED');
    // Only the web share was revoked.
    expect(await page.locator('[data-testid="session-item"][data-provider="tmate"]').getAttribute('data-status')).toBe('READY');
    await page.screenshot({ path: 'test-results/run-controls.png', fullPage: true });
  });

  it('needs-operator: the agent asks, the runs list flags the row live, the run page shows a banner an operator dismisses', async () => {
    await page.goto(`${hub.url}/#/`);
    await page.getByTestId('runs-list').waitFor({ timeout: 10_000 });
    const asking = await start('sleep 1; handoff-agent request-operator "stuck on a flaky test"; while true; do sleep 0.2; done', 'e2e asks for help');
    const row = page.locator(`[data-testid="run-row"][data-run-id="${asking}"]`);
    await row.getByTestId('needs-operator-badge').waitFor({ timeout: 15_000 });
    expect(await row.getByTestId('needs-operator-badge').getAttribute('title')).toBe('stuck on a flaky test');

    await row.click();
    const banner = page.getByTestId('needs-operator-banner');
    await banner.waitFor({ timeout: 10_000 });
    expect(await banner.textContent()).toContain('stuck on a flaky test');
    await page.getByTestId('dismiss-needs-operator').click();
    await banner.waitFor({ state: 'detached', timeout: 10_000 });
    expect((await api(hub.url, operator, 'GET', `/api/task-runs/${asking}`)).body.needsOperator).toBeNull();

    await page.goto(`${hub.url}/#/`);
    await row.waitFor({ timeout: 10_000 });
    expect(await row.getByTestId('needs-operator-badge').count()).toBe(0);
  });

  it('an observer sees the state and the messages, and no controls', async () => {
    const observerPage = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    try {
      await login(observerPage, await hub.token('observer'));
      await observerPage.goto(`${hub.url}/#/runs/${runId}`);
      await expect.poll(() => observerPage.getByTestId('control-state').textContent(), { timeout: 10_000 }).toBe('agent');
      await expect.poll(() => observerPage.getByTestId('message-item').count(), { timeout: 10_000 }).toBe(2);
      // Sessions load apart from messages.
      await expect.poll(() => observerPage.getByTestId('session-item').count(), { timeout: 10_000 }).toBe(2);
      for (const control of ['pause-button', 'pause-hard-button', 'resume-button', 'message-input', 'share-web', 'share-tmate', 'extend-session', 'revoke-session', 'approvals-link']) {
        expect(await observerPage.getByTestId(control).count(), control).toBe(0);
      }
    } finally {
      await observerPage.context().close();
    }
  });
});
