/**
 * The dashboard as a new user sees it, in a real browser: the page loads with no console error
 * and nothing from outside; an order placed with the page's form appears with its steps in
 * order; an injected failure shows "compensating…", then "compensated"; a stream dropped and
 * opened again resumes with what it missed. Screenshots go to .tmp/dashboard-*.png (the README's
 * picture comes from there). Headless Chromium driven by playwright-core; `npm run test:browser`.
 */
import { mkdirSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anOrder } from '../../support/builders.ts';
import { System } from '../../support/system.ts';
import { launchChromium } from '../support/browser.ts';
import { awaitTerminal, place } from '../support/saga.ts';

const SHOTS = '.tmp';

let system: System;
let browser: Browser;
let page: Page;
const problems: string[] = [];
const requested: string[] = [];

/** The row of a saga on the page, by order id. */
const row = (orderId: string) => page.locator(`#sagas tbody tr[data-order-id="${orderId}"]`);
/** The labels of a saga's steps, in the column of one service. */
const steps = (orderId: string, column: number) =>
  row(orderId).locator(`td:nth-child(${column}) .step`).allTextContents();

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  system = await System.start();
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(String(error)));
  page.on('request', (request) => requested.push(request.url()));
});

afterAll(async () => {
  await browser?.close();
  await system?.destroy();
});

describe('the dashboard in a browser', () => {
  it('loads with no console error, everything from the service itself, and goes live', async () => {
    await page.goto(system.url('order-creation', '/dashboard'));

    await expect.poll(() => page.locator('#connection').textContent()).toBe('live');
    await expect.poll(() => page.locator('#queues tbody tr').count(), { timeout: 10_000 }).toBeGreaterThan(0);
    expect(problems).toEqual([]);
    const origin = new URL(system.url('order-creation', '/')).origin;
    expect(requested.filter((url) => !url.startsWith(origin))).toEqual([]);
  });

  it('an order placed with the form appears, its steps lit in order in each service', async () => {
    await page.selectOption('#order-form select[name=sku]', 'WIDGET-1');
    await page.selectOption('#order-form select[name=failAt]', '');
    await page.click('#order-form button[type=submit]');
    await expect.poll(() => page.locator('#order-result').getAttribute('data-order-id')).toBeTruthy();
    const orderId = String(await page.locator('#order-result').getAttribute('data-order-id'));

    await expect.poll(() => row(orderId).getAttribute('data-status'), { timeout: 15_000 }).toBe('COMPLETED');

    expect(await row(orderId).locator('td').first().textContent()).toBe(`…${orderId.slice(-8)}`);
    expect(await steps(orderId, 3)).toEqual(['created', 'completed']);
    expect(await steps(orderId, 4)).toEqual(['reserved']);
    expect(await steps(orderId, 6)).toEqual(['dispatched']);
    expect(await row(orderId).locator('.step.forward').count()).toBe(4);
    expect(await row(orderId).locator('.step.failure, .step.compensation').count()).toBe(0);
    // A click shows its whole timeline, in order, from the order API.
    await row(orderId).click();
    await expect
      .poll(() => page.locator('#detail-timeline li').allTextContents())
      .toEqual([
        expect.stringContaining('order.created (order-creation)'),
        expect.stringContaining('inventory.reserved (inventory)'),
        expect.stringContaining('shipment.dispatched (shipment)'),
        expect.stringContaining('order.completed (order-creation)'),
      ]);
    await page.screenshot({ path: `${SHOTS}/dashboard-completed.png` });
    expect(problems).toEqual([]);
  });

  it('an injected failure shows compensating…, then compensated, with its compensations in their own colour', async () => {
    // Replenishment frozen: its report (replenishment.cancelled) waits, so "compensating…" stays
    // on screen, inventory's release already lit, until it is thawed.
    system.pause('replenishment');
    try {
      await page.selectOption('#order-form select[name=sku]', 'WIDGET-1');
      await page.selectOption('#order-form select[name=failAt]', 'shipment');
      const before = await page.locator('#order-result').getAttribute('data-order-id');
      await page.click('#order-form button[type=submit]');
      await expect.poll(() => page.locator('#order-result').getAttribute('data-order-id')).not.toBe(before);
      const orderId = String(await page.locator('#order-result').getAttribute('data-order-id'));

      await expect
        .poll(() => row(orderId).getAttribute('data-settlement'), { timeout: 15_000 })
        .toBe('compensating');
      await expect.poll(() => steps(orderId, 4)).toEqual(['reserved', '↺ released']);
      expect(await row(orderId).locator('.settle').allTextContents()).toEqual([
        'SHIPMENT_FAILED',
        'compensating… (replenishment.cancelled)',
      ]);
      await page.screenshot({ path: `${SHOTS}/dashboard-compensating.png` });
      system.pause('replenishment', false);

      await expect
        .poll(() => row(orderId).getAttribute('data-settlement'), { timeout: 15_000 })
        .toBe('compensated');
      expect(await row(orderId).getAttribute('data-status')).toBe('CANCELLED');
      expect(await row(orderId).locator('.settle').allTextContents()).toEqual([
        'SHIPMENT_FAILED',
        'compensated',
      ]);
      expect(await row(orderId).locator('td:nth-child(6) .step.failure').allTextContents()).toEqual([
        'failed ✗',
      ]);
      expect(await row(orderId).locator('td:nth-child(4) .step.compensation').allTextContents()).toEqual([
        '↺ released',
      ]);
      expect(await row(orderId).locator('td:nth-child(5) .step.compensation').allTextContents()).toEqual([
        '↺ purchases off',
      ]);
      await page.screenshot({ path: `${SHOTS}/dashboard-compensated.png` });
      expect(problems).toEqual([]);
    } finally {
      system.pause('replenishment', false);
    }
  });

  it('a stream dropped and opened again resumes after the last event it saw: what happened meanwhile shows', async () => {
    await page.evaluate(() => (globalThis as unknown as { dashboard: { drop(): void } }).dashboard.drop());
    await expect.poll(() => page.locator('#connection').textContent()).toBe('offline');
    const missed = await place(system, anOrder());
    await awaitTerminal(system, missed.id);
    expect(await row(missed.id).count()).toBe(0);

    await page.evaluate(() =>
      (globalThis as unknown as { dashboard: { reconnect(): void } }).dashboard.reconnect(),
    );

    await expect
      .poll(() => row(missed.id).getAttribute('data-status'), { timeout: 10_000 })
      .toBe('COMPLETED');
    expect(await steps(missed.id, 3)).toEqual(['created', 'completed']);
    const resumed = requested.filter((url) => url.includes('/dashboard/stream?lastEventId='));
    expect(resumed).toHaveLength(1);
    expect(problems).toEqual([]);
  });

  it('with traffic started from the page, sagas flow and the counters move', async () => {
    await page.fill('#traffic-form input[name=rate]', '10');
    await page.fill('#traffic-form input[name=duration]', '20');
    await page.fill('#traffic-form input[name=failures]', '0.3');
    await page.click('#traffic-form button[type=submit]');

    await expect
      .poll(() => page.locator('#traffic-state').textContent(), { timeout: 5000 })
      .toContain('running');
    await expect
      .poll(async () => Number(await page.locator('#rate').textContent()), { timeout: 15_000 })
      .toBeGreaterThan(3);
    await page.waitForTimeout(3000);
    await page.screenshot({ path: `${SHOTS}/dashboard-traffic.png` });
    await page.click('#traffic-stop');

    await expect.poll(() => page.locator('#traffic-state').textContent(), { timeout: 5000 }).toBe('stopped');
    expect(await page.locator('#p99').textContent()).toMatch(/\d+ ms/);
    expect(await page.locator('#sagas tbody tr').count()).toBeGreaterThan(10);
    expect(problems).toEqual([]);
  });
});
