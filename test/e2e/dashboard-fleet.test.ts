import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Flags for a closed network (no background lookups) and running as root.
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// STAND-IN: no tmate relay is reachable here; the worker's tmate is test/fixtures/fake-tmate.
const FAKE_TMATE = path.resolve('test/fixtures/fake-tmate');
const SCREENSHOTS = path.resolve('docs/screenshots');

declare global {
  interface Window {
    /** Recorded by the init script: every Notification the page constructed. */
    __notifications?: { title: string; body: string }[];
  }
}

// The fleet views in a real Chromium against a real hub, worker and tmux: the runs list's
// search, filters and needs-operator ordering, browser notifications and the title badge, the
// wall of live terminals, and screenshots at desktop and phone widths.
describe('fleet views in a real browser: runs list, notifications, wall, narrow screens', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let operator: string;
  let admin: string;
  const flags = mkdtempSync(path.join(tmpdir(), 'handoff-fleet-'));
  const runs: string[] = [];
  const problems: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '200ms', LIVE_PROVIDER_START_TIMEOUT: '5s' } });
    operator = (await hub.auth.addUser('alice', 'operator')).token;
    admin = (await hub.auth.addUser('dana', 'admin')).token;
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`build-box-${randomBytes(2).toString('hex')}`), capacity: 6, env: { TMATE_BIN: FAKE_TMATE } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    await context.grantPermissions(['notifications'], { origin: hub.url });
    // Records each notification while keeping the real constructor (and its permission check).
    await context.addInitScript(() => {
      const Real = window.Notification;
      const seen: { title: string; body: string }[] = [];
      window.__notifications = seen;
      class Recorded extends Real {
        constructor(title: string, options?: NotificationOptions) {
          super(title, options);
          seen.push({ title, body: options?.body ?? '' });
        }
      }
      Object.defineProperty(window, 'Notification', { value: Recorded, configurable: true, writable: true });
    });
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  }, 60_000);
  afterAll(async () => {
    for (const id of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {}).catch(() => undefined);
    await browser?.close();
    const runDir = worker?.runDir;
    await worker?.stop();
    if (runDir) expect(await untilNoProcess(runDir)).toEqual([]);
    await hub?.stop();
    rmSync(flags, { recursive: true, force: true });
  });

  const start = async (body: object) => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    runs.push(res.body.id as string);
    return res.body.id as string;
  };
  const row = (id: string) => page.locator(`[data-testid="run-row"][data-run-id="${id}"]`);
  const shownIds = () => page.locator('[data-testid="run-row"]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-run-id')));
  const noHorizontalScroll = () => page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }));

  let asking: string;
  let steady: string;
  let other: string;

  it('search and filters narrow the list; a run asking for an operator jumps to the top and notifies', async () => {
    // The oldest run asks later, when the test drops its flag file: it must then move up.
    const flag = path.join(flags, 'ask');
    asking = await start({
      command: { script: `echo "waiting for the flag"; while [ ! -f ${flag} ]; do sleep 0.2; done; handoff-agent request-operator "migration needs a human"; while true; do sleep 0.5; done` },
      title: 'alpha: migrate billing schema',
      labels: { team: 'payments', env: 'prod' },
    });
    steady = await start({ command: { script: 'i=0; while true; do i=$((i+1)); echo "beta tick $i"; sleep 0.5; done' }, title: 'beta: index docs', labels: { team: 'search' } });
    other = await start({ command: { script: 'echo "gamma finished"' }, title: 'gamma: nightly report' });

    await page.goto(hub.url);
    await page.getByTestId('token-input').fill(admin);
    await page.getByTestId('login-button').click();
    await page.getByTestId('runs-list').waitFor({ timeout: 10_000 });
    await expect.poll(() => row(other).getAttribute('data-status'), { timeout: 20_000 }).toBe('succeeded');
    await expect.poll(() => row(asking).getAttribute('data-status'), { timeout: 20_000 }).toBe('running');
    await expect.poll(() => row(steady).getAttribute('data-status'), { timeout: 20_000 }).toBe('running');
    // Names, not ids; a finished run reads as finished.
    expect(await row(other).getByTestId('run-created').textContent()).toContain('alice');
    expect(await row(other).getByTestId('run-worker').textContent()).toContain('build-box-');
    expect(await shownIds()).toEqual([other, steady, asking]);

    // Search: title, label value, key:value; case-insensitive.
    await page.getByTestId('runs-search').fill('ALPHA');
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([asking]);
    await page.getByTestId('runs-search').fill('team:search');
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([steady]);
    await page.getByTestId('runs-search').fill('no such run');
    await page.getByTestId('runs-empty').waitFor({ timeout: 10_000 });
    await page.getByTestId('clear-filters').click();
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([other, steady, asking]);
    // Status and live-share filters.
    await page.getByTestId('filter-status').selectOption('finished');
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([other]);
    await page.getByTestId('filter-status').selectOption('running');
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([steady, asking]);
    await page.getByTestId('filter-share').selectOption('any');
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([steady, asking]);
    await page.getByTestId('filter-share').selectOption('none');
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([]);
    await page.getByTestId('clear-filters').click();
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([other, steady, asking]);
    // Each live share has its badge: provider and time left.
    const badge = row(steady).getByTestId('share-badge');
    expect(await badge.getAttribute('data-provider')).toBe('web');
    expect(await badge.getAttribute('data-tone')).toBe('live');
    expect(await badge.textContent()).toMatch(/web\s*\d+m \d\ds/);
    // Extended elsewhere: the badge follows live, no reload.
    const extended = await api(hub.url, operator, 'POST', `/api/task-runs/${steady}/live-session/extend`, { ttlMinutes: 90, provider: 'web' });
    expect(extended.status, JSON.stringify(extended.body)).toBe(200);
    await expect.poll(() => badge.textContent(), { timeout: 10_000 }).toMatch(/web\s*1h 29m/);

    // Notifications on, from a click (the permission is granted to this context).
    await page.getByTestId('notifications-button').click();
    await page.getByTestId('notifications-toggle').check();
    await expect.poll(() => page.getByTestId('notifications-toggle').isChecked()).toBe(true);
    await page.keyboard.press('Escape');
    expect(await page.title()).toBe('Handoff');

    writeFileSync(flag, '');
    await expect.poll(shownIds, { timeout: 15_000 }).toEqual([asking, other, steady]);
    expect(await row(asking).getAttribute('data-needs-operator')).toBe('true');
    await expect.poll(() => page.evaluate(() => window.__notifications ?? []), { timeout: 10_000 }).toEqual([
      { title: 'Needs an operator: alpha: migrate billing schema', body: 'migration needs a human' },
    ]);
    expect(await page.title()).toBe('(1) Handoff');
    expect(await page.getByTestId('attention-count').textContent()).toBe('1');

    // An approval waiting for this admin adds to the count and notifies too.
    const share = await api(hub.url, operator, 'POST', `/api/task-runs/${steady}/live-session`, { provider: 'tmate' });
    expect(share.status, JSON.stringify(share.body)).toBe(202);
    await expect.poll(() => page.title(), { timeout: 10_000 }).toBe('(2) Handoff');
    await expect.poll(() => page.evaluate(() => (window.__notifications ?? []).map((n) => n.title)), { timeout: 10_000 }).toEqual([
      'Needs an operator: alpha: migrate billing schema',
      'Approval waiting: session.create.external',
    ]);
    // A filter keeps the asking run on top of what matches; the setting survives a reload.
    await page.getByTestId('filter-needs-operator').check();
    await expect.poll(shownIds, { timeout: 10_000 }).toEqual([asking]);
    await page.getByTestId('clear-filters').click();
    await page.reload();
    await page.getByTestId('runs-list').waitFor({ timeout: 10_000 });
    await expect.poll(() => page.title(), { timeout: 10_000 }).toBe('(2) Handoff');
    await page.getByTestId('notifications-button').click();
    expect(await page.getByTestId('notifications-toggle').isChecked()).toBe(true);
    await page.keyboard.press('Escape');
    // Already waiting when the page loaded: counted, not notified again.
    expect(await page.evaluate(() => window.__notifications ?? [])).toEqual([]);
  }, 90_000);

  it('the wall shows three running runs live in one page; a tile opens its run', async () => {
    const third = await start({ command: { script: 'i=0; while true; do i=$((i+1)); echo "delta line $i"; sleep 0.5; done' }, title: 'delta: crawl' });
    await page.goto(`${hub.url}/#/wall`);
    const tile = (id: string) => page.locator(`[data-testid="wall-tile"][data-run-id="${id}"]`);
    const text = (id: string) => page.evaluate((runId) => window.__handoffWallText?.(runId) ?? '', id);
    for (const id of [asking, steady, third]) await tile(id).waitFor({ timeout: 15_000 });
    expect(await page.locator('[data-testid="wall-tile"]').count()).toBe(3); // the finished run is not on the wall
    // The asking run is first and highlighted.
    expect(await page.locator('[data-testid="wall-tile"]').first().getAttribute('data-run-id')).toBe(asking);
    expect(await tile(asking).getByTestId('wall-needs-operator').textContent()).toContain('migration needs a human');
    await expect.poll(() => text(asking), { timeout: 15_000 }).toContain('waiting for the flag');
    // Live: each counter keeps moving while the page is open.
    const lastTick = (t: string, word: string) => Math.max(0, ...[...t.matchAll(new RegExp(`${word} (\\d+)`, 'g'))].map((m) => Number(m[1])));
    await expect.poll(async () => lastTick(await text(steady), 'beta tick'), { timeout: 15_000 }).toBeGreaterThan(0);
    await expect.poll(async () => lastTick(await text(third), 'delta line'), { timeout: 15_000 }).toBeGreaterThan(0);
    const beta = lastTick(await text(steady), 'beta tick');
    const delta = lastTick(await text(third), 'delta line');
    await expect.poll(async () => lastTick(await text(steady), 'beta tick'), { timeout: 10_000 }).toBeGreaterThan(beta + 2);
    await expect.poll(async () => lastTick(await text(third), 'delta line'), { timeout: 10_000 }).toBeGreaterThan(delta + 2);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'wall-1400.png') });

    // Only tiles on screen stream: on a short phone screen the lower tiles wait until scrolled to.
    await page.setViewportSize({ width: 390, height: 420 });
    await page.reload();
    for (const id of [asking, steady, third]) await tile(id).waitFor({ timeout: 15_000 });
    await expect.poll(() => tile(asking).getAttribute('data-watching'), { timeout: 10_000 }).toBe('true');
    // The lowest tile (newest first after the asking one: the oldest plain run).
    const below = page.locator('[data-testid="wall-tile"]').last();
    const belowId = (await below.getAttribute('data-run-id'))!;
    expect(belowId).toBe(steady);
    const box = await below.boundingBox();
    expect(box!.y).toBeGreaterThan(420 + 200);
    expect(await below.getAttribute('data-watching')).toBe('false');
    expect(await text(belowId)).toBe('');
    await below.scrollIntoViewIfNeeded();
    await expect.poll(() => below.getAttribute('data-watching'), { timeout: 10_000 }).toBe('true');
    await expect.poll(() => text(belowId), { timeout: 15_000 }).toContain('beta tick');
    const scroll = await noHorizontalScroll();
    expect(scroll.scrollWidth).toBeLessThanOrEqual(scroll.innerWidth);
    await page.setViewportSize({ width: 1400, height: 900 });

    await tile(steady).click();
    await page.waitForURL(`**/#/runs/${steady}`, { timeout: 10_000 });
  }, 90_000);

  it('screenshots at 1400×900 and 390×844: runs list and approvals, no horizontal scroll on a phone', async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const [width, height] of [[1400, 900], [390, 844]] as const) {
      await page.setViewportSize({ width, height });
      await page.goto(`${hub.url}/#/`);
      await page.getByTestId('runs-list').waitFor({ timeout: 10_000 });
      await expect.poll(shownIds, { timeout: 10_000 }).toContain(asking);
      await page.screenshot({ path: path.join(SCREENSHOTS, `runs-${width}.png`) });
      if (width === 390) {
        const scroll = await noHorizontalScroll();
        expect(scroll.scrollWidth, 'runs list').toBeLessThanOrEqual(scroll.innerWidth);
        // The run title stays readable on a card.
        expect((await row(asking).locator('.name').boundingBox())!.width).toBeGreaterThan(150);
        // The header folds: user name and Log out are one tap away, reachable by keyboard too.
        expect(await page.getByTestId('logout-button').isVisible()).toBe(false);
        await page.getByTestId('menu-button').focus();
        await page.keyboard.press('Enter');
        expect(await page.getByTestId('whoami').textContent()).toContain('dana');
        expect(await page.getByTestId('logout-button').isVisible()).toBe(true);
        await page.screenshot({ path: path.join(SCREENSHOTS, 'runs-menu-390.png') });
        await page.keyboard.press('Escape');
      }
      await page.goto(`${hub.url}/#/approvals`);
      await page.getByTestId('approvals-link').waitFor();
      await expect.poll(() => page.getByTestId('approvals-link').getAttribute('data-count'), { timeout: 10_000 }).toBe('1');
      await page.screenshot({ path: path.join(SCREENSHOTS, `approvals-${width}.png`) });
      if (width === 390) {
        const scroll = await noHorizontalScroll();
        expect(scroll.scrollWidth, 'approvals').toBeLessThanOrEqual(scroll.innerWidth);
      }
    }
    await page.setViewportSize({ width: 1400, height: 900 });
    expect(problems).toEqual([]);
  }, 60_000);
});
