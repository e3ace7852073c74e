/**
 * What a new user does first, in a real browser: open Swagger UI, place an order with "Try it
 * out", and see it complete. Headless Chromium (Debian's `chromium`) driven by playwright-core;
 * run by `npm run test:browser` (CI installs Chromium), not by `npm test`.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anOrder } from '../../support/builders.ts';
import { System } from '../../support/system.ts';
import { launchChromium } from '../support/browser.ts';

let system: System;
let browser: Browser;
let page: Page;
/** Every URL the page asked for: all of them must be this service (no CDN). */
const requested: string[] = [];

beforeAll(async () => {
  system = await System.start();
  browser = await launchChromium();
  page = await browser.newPage();
  page.on('request', (request) => requested.push(request.url()));
});

afterAll(async () => {
  await browser?.close();
  await system?.destroy();
});

describe('Swagger UI', () => {
  it('shows the order API, served by the service itself', async () => {
    await page.goto(system.url('order-creation', '/docs'));

    await page.locator('#operations-orders-createOrder').waitFor({ timeout: 20_000 });
    const operations = await page.locator('.opblock-summary-path').allInnerTexts();
    expect(operations.map((p) => p.replace(/\u200b/g, '').trim())).toEqual(
      expect.arrayContaining(['/orders', '/orders/{id}', '/orders/{id}/cancel']),
    );
    const origin = new URL(system.url('order-creation', '/')).origin;
    expect(requested.filter((url) => !url.startsWith(origin))).toEqual([]);
  });

  it('places an order with "Try it out", and the order completes', async () => {
    const post = page.locator('#operations-orders-createOrder');
    await post.locator('.opblock-summary').click();
    // As the README says: an operation opens read-only, "Try it out" makes it editable.
    const tryItOut = post.locator('.try-out__btn');
    await expect.poll(() => tryItOut.innerText()).toBe('Try it out');
    await tryItOut.click();
    await expect.poll(() => tryItOut.innerText()).toBe('Cancel');
    const order = anOrder();
    await post.locator('textarea.body-param__text').fill(JSON.stringify(order, null, 2));
    await post.getByRole('button', { name: 'Execute' }).click();

    const status = post.locator('.live-responses-table .response .response-col_status').first();
    await expect.poll(() => status.innerText(), { timeout: 20_000 }).toBe('201');
    const answer = JSON.parse(await post.locator('.live-responses-table .microlight').first().innerText());
    expect(answer).toMatchObject({ status: 'PENDING', customerId: order.customerId });

    const done = await fetch(system.url('order-creation', `/orders/${answer.id}?wait=20000`));
    expect(await done.json()).toMatchObject({ id: answer.id, status: 'COMPLETED' });
  });
});
