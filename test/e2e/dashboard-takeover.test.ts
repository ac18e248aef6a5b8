import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { Run } from '@handoff/shared';
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
// The agent: a shell loop that prints a line and honours a checkpoint each step.
const AGENT = 'i=0; while true; do handoff-agent checkpoint; i=$((i+1)); echo "step $i"; sleep 0.2; done';

/** A page and every socket.io frame it sent (to prove what a read-only terminal did not send). */
interface Viewer {
  page: Page;
  sent: string[];
}

describe('takeover in a real browser: banner, write grant countdown, typing into the run, hand back, release', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let operator: Viewer;
  let observer: Viewer;
  let operatorToken: string;
  let operatorName: string;
  let admin: string;
  let runId: string;
  const runs: string[] = [];
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    hub = await startTestHub({ env: { PAUSE_SOFT_GRACE: '2s', SWEEP_INTERVAL: '100ms', LIVE_PROVIDER_START_TIMEOUT: '5s' } });
    operatorToken = await hub.token('operator');
    operatorName = (await api(hub.url, operatorToken, 'GET', '/api/auth/whoami')).body.name as string;
    admin = await hub.token('admin');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`e2e-takeover-${randomBytes(3).toString('hex')}`), capacity: 2, env: { TMATE_BIN: FAKE_TMATE } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    // Each user in a browser context of their own (their own localStorage token).
    operator = await viewer(1280, 1000);
    observer = await viewer(1280, 900);
  });
  afterAll(async () => {
    for (const id of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {}).catch(() => undefined);
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    const runDir = worker?.runDir;
    await worker?.stop();
    // The runs' tmux servers (the agent's and the operator's shells) live under the worker's run dir.
    if (runDir) expect(await untilNoProcess(runDir)).toEqual([]);
    await hub?.stop();
  });

  async function viewer(width: number, height: number): Promise<Viewer> {
    const context = await browser.newContext({ viewport: { width, height } });
    contexts.push(context);
    const page = await context.newPage();
    const sent: string[] = [];
    page.on('websocket', (ws) => ws.on('framesent', (frame) => void sent.push(String(frame.payload))));
    return { page, sent };
  }
  const login = async (p: Page, token: string) => {
    await p.goto(hub.url);
    await p.getByTestId('token-input').fill(token);
    await p.getByTestId('login-button').click();
    await p.getByTestId('runs-list').waitFor({ timeout: 10_000 });
  };
  const terminalText = (p: Page) => p.evaluate(() => (window as unknown as { __handoffTerminalText?: () => string }).__handoffTerminalText?.() ?? '');
  /** Whether a line of the terminal is exactly `line` (output, not the command line that printed it). */
  const hasLine = async (p: Page, line: string) => (await terminalText(p)).split('\n').some((l) => l.trim() === line);
  const inputFrames = (v: Viewer) => v.sent.filter((f) => f.includes('"term:input"'));
  const getRun = async () => (await api(hub.url, operatorToken, 'GET', `/api/task-runs/${runId}`)).body as Run;
  const lastStep = async (p: Page) => Math.max(0, ...[...(await terminalText(p)).matchAll(/^step (\d+)$/gm)].map((m) => Number(m[1])));

  it('an operator and an observer open a running agent: read-only terminal, the operator may take over', async () => {
    const res = await api(hub.url, operatorToken, 'POST', '/api/task-runs', { command: { script: AGENT }, title: 'e2e takeover' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    runId = res.body.id as string;
    runs.push(runId);

    await login(operator.page, operatorToken);
    await login(observer.page, await hub.token('observer'));
    for (const { page } of [operator, observer]) {
      await page.goto(`${hub.url}/#/runs/${runId}`);
      await expect.poll(() => page.locator('[data-testid="session-item"][data-provider="web"]').getAttribute('data-status'), { timeout: 15_000 }).toBe('READY');
      await expect.poll(() => lastStep(page), { timeout: 15_000 }).toBeGreaterThan(1);
      expect(await page.getByTestId('terminal').getAttribute('data-writable')).toBe('false');
      expect(await page.getByTestId('terminal-input-indicator').count()).toBe(0);
      expect(await page.getByTestId('controller-banner').count()).toBe(0);
    }
    expect(await operator.page.getByTestId('takeover-button').isEnabled()).toBe(true);
    expect(await observer.page.getByTestId('takeover-button').count()).toBe(0);
    expect(await observer.page.getByTestId('grant-request').count()).toBe(0);
  });

  it('Take over: everyone sees the banner; the taker gets a write-access countdown and an input indicator', async () => {
    await operator.page.getByTestId('takeover-button').click();
    const state = operator.page.getByTestId('control-state');
    await expect.poll(() => state.textContent(), { timeout: 10_000 }).toBe('operator');
    // The worker applied it: the agent is paused and the operator's shell is there.
    await expect.poll(() => state.getAttribute('data-applied'), { timeout: 15_000 }).toBe('true');

    for (const { page } of [operator, observer]) {
      const banner = page.getByTestId('controller-banner');
      await banner.waitFor({ timeout: 10_000 });
      expect(await banner.textContent()).toContain(`${operatorName} has taken over — agent paused`);
    }
    const countdown = operator.page.getByTestId('grant-countdown');
    await countdown.waitFor({ timeout: 10_000 });
    expect((await countdown.textContent())?.trim()).toMatch(/^Write access · 1[45]:\d\d left$/);
    expect(await countdown.getAttribute('data-warning')).toBe('false');
    await operator.page.getByTestId('terminal-input-indicator').waitFor({ timeout: 10_000 });
    expect(await operator.page.getByTestId('terminal').getAttribute('data-writable')).toBe('true');
    // The hand-back form is the controller's alone; the live grant is listed for everyone.
    expect(await operator.page.getByTestId('handback-summary').count()).toBe(1);
    expect(await observer.page.getByTestId('handback-summary').count()).toBe(0);
    await expect.poll(() => observer.page.getByTestId('grant-item').count(), { timeout: 10_000 }).toBe(1);
    expect(await observer.page.getByTestId('grant-item').textContent()).toContain(operatorName);
    expect(await observer.page.getByTestId('grant-countdown').count()).toBe(0);
    expect(await observer.page.getByTestId('terminal-input-indicator').count()).toBe(0);

    const run = await getRun();
    expect(run.control).toMatchObject({ state: 'operator', by: { name: operatorName } });
    expect(run.writeGrants).toHaveLength(1);
    expect(run.writeGrants[0]).toMatchObject({ granteeName: operatorName, status: 'active' });
  });

  it('the operator types a command with the keyboard; its output comes back from the shell on the worker, for every viewer', async () => {
    const word = `typed-${randomBytes(4).toString('hex')}`;
    await operator.page.getByTestId('terminal').click();
    await operator.page.keyboard.type(`echo ${word}`);
    await operator.page.keyboard.press('Enter');
    // A line that is only the word is the command's output, not the echoed command line.
    await expect.poll(() => hasLine(operator.page, word), { timeout: 15_000 }).toBe(true);
    await expect.poll(() => hasLine(observer.page, word), { timeout: 15_000 }).toBe(true);
    // Sent as term:input frames (coalescing and ordering are unit-tested in web/src/lib/terminal-input.test.ts).
    expect(inputFrames(operator).length).toBeGreaterThan(0);
    expect(await operator.page.getByTestId('terminal-input-error').count()).toBe(0);
  });

  it("the observer's terminal is read-only: typing into it sends nothing", async () => {
    const word = `observer-${randomBytes(4).toString('hex')}`;
    await observer.page.getByTestId('terminal').click();
    await observer.page.keyboard.type(`echo ${word}`);
    await observer.page.keyboard.press('Enter');
    await new Promise((r) => setTimeout(r, 1500));
    expect(inputFrames(observer)).toEqual([]);
    expect(await terminalText(operator.page)).not.toContain(word);
    expect(await terminalText(observer.page)).not.toContain(word);
    expect(await observer.page.getByTestId('terminal').getAttribute('data-writable')).toBe('false');
    await observer.page.getByTestId('terminal-readonly').waitFor();
  });

  it('Hand back needs a summary; with one, control returns to the agent, the banner goes, input stops and the agent resumes', async () => {
    await operator.page.screenshot({ path: 'test-results/takeover.png', fullPage: true });
    await operator.page.getByTestId('handback-button').click();
    const problem = operator.page.getByTestId('handback-error');
    await problem.waitFor({ timeout: 5000 });
    expect(await problem.textContent()).toMatch(/summary/i);
    expect((await getRun()).control.state).toBe('operator');

    const before = await lastStep(operator.page);
    const summary = 'Fixed the flaky config by hand; rerun the test suite and carry on.';
    await operator.page.getByTestId('handback-summary').fill(summary);
    expect(await operator.page.getByTestId('handback-counter').textContent()).toBe(`${summary.length} / 4000`);
    await operator.page.getByTestId('handback-button').click();

    await expect.poll(() => operator.page.getByTestId('control-state').textContent(), { timeout: 10_000 }).toBe('agent');
    for (const { page } of [operator, observer]) {
      await page.getByTestId('controller-banner').waitFor({ state: 'detached', timeout: 10_000 });
      await page.getByTestId('grant-item').waitFor({ state: 'detached', timeout: 10_000 });
    }
    await operator.page.getByTestId('grant-countdown').waitFor({ state: 'detached', timeout: 10_000 });
    await operator.page.getByTestId('terminal-input-indicator').waitFor({ state: 'detached', timeout: 10_000 });
    expect(await operator.page.getByTestId('grant-ended').textContent()).toBe('Write access ended (handed back)');
    expect(await operator.page.getByTestId('terminal').getAttribute('data-writable')).toBe('false');

    await expect.poll(() => getRun().then((r) => [r.control.state, r.control.appliedSeq === r.control.seq, r.writeGrants.length]), { timeout: 15_000 }).toEqual(['agent', true, 0]);
    // The agent steps again.
    await expect.poll(() => lastStep(operator.page), { timeout: 15_000 }).toBeGreaterThan(before);

    // Typing now sends nothing.
    const sentBefore = inputFrames(operator).length;
    await operator.page.getByTestId('terminal').click();
    await operator.page.keyboard.type('ls');
    await new Promise((r) => setTimeout(r, 500));
    expect(inputFrames(operator).length).toBe(sentBefore);
  });

  it('Request write access gives a countdown and input; Release ends it at once', async () => {
    const request = operator.page.getByTestId('grant-request');
    expect(await operator.page.getByTestId('grant-ttl').inputValue()).toBe('15');
    await request.click();
    const countdown = operator.page.getByTestId('grant-countdown');
    await countdown.waitFor({ timeout: 10_000 });
    expect((await countdown.textContent())?.trim()).toMatch(/^Write access · 1[45]:\d\d left$/);
    await operator.page.getByTestId('terminal-input-indicator').waitFor({ timeout: 10_000 });
    expect(await operator.page.getByTestId('grant-ended').count()).toBe(0);
    // The web share alone carries no RW attach data.
    expect(await operator.page.getByTestId('rw-attach').count()).toBe(0);
    await expect.poll(() => observer.page.getByTestId('grant-item').count(), { timeout: 10_000 }).toBe(1);

    await operator.page.getByTestId('grant-release').click();
    await operator.page.getByTestId('terminal-input-indicator').waitFor({ state: 'detached', timeout: 10_000 });
    await countdown.waitFor({ state: 'detached', timeout: 10_000 });
    expect(await operator.page.getByTestId('grant-ended').textContent()).toBe('Write access ended (released)');
    await observer.page.getByTestId('grant-item').waitFor({ state: 'detached', timeout: 10_000 });
    expect((await getRun()).writeGrants).toEqual([]);
    await operator.page.screenshot({ path: 'test-results/takeover-released.png', fullPage: true });

    const sentBefore = inputFrames(operator).length;
    await operator.page.getByTestId('terminal').click();
    await operator.page.keyboard.type('ls');
    await new Promise((r) => setTimeout(r, 500));
    expect(inputFrames(operator).length).toBe(sentBefore);
  });

  it("a grant on a tmate share reveals its RW attach data once, to the grantee only, and never stores it", async () => {
    const shared = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect(shared.status, JSON.stringify(shared.body)).toBeLessThan(300);
    const tmate = operator.page.locator('[data-testid="session-item"][data-provider="tmate"]');
    await expect.poll(() => tmate.getAttribute('data-status'), { timeout: 15_000 }).toBe('READY');

    await operator.page.getByTestId('grant-provider').selectOption('tmate');
    await operator.page.getByTestId('grant-request').click();
    const box = operator.page.getByTestId('rw-attach');
    await box.waitFor({ timeout: 10_000 });
    expect(await box.textContent()).toContain('ssh rw-SECRET-FAKE@fake.relay');
    expect(await box.getByTestId('copy-button').count()).toBeGreaterThan(0);
    // Only the grantee ever sees it; nothing of it is kept in the browser's storage.
    await expect.poll(() => observer.page.getByTestId('grant-item').count(), { timeout: 10_000 }).toBe(1);
    expect(await observer.page.content()).not.toContain('SECRET');
    for (const { page } of [operator, observer]) {
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
      expect(stored).not.toContain('SECRET');
    }

    await operator.page.getByTestId('rw-attach-dismiss').click();
    await box.waitFor({ state: 'detached' });
    expect(await operator.page.content()).not.toContain('SECRET');
    await operator.page.getByTestId('grant-release').click();
    await operator.page.getByTestId('grant-ended').waitFor({ timeout: 10_000 });
    expect(hub.logs()).not.toContain('rw-SECRET-FAKE');
  });
});
