/**
 * The contracts hold together: every documented route is served and every served route is
 * documented; each service subscribes to exactly what saga.md's routing table says, in one map
 * written out in its handlers.ts; each main.ts canvas lists what the service really consumes and
 * emits; imports follow the layers; events validate.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.ts';
import { contracts } from '../../common/contracts.ts';
import {
  EMITTED_BY,
  NOTIFICATIONS,
  ROUTING_KEYS,
  type RoutingKey,
  SERVICES,
  type ServiceName,
} from '../../common/events.ts';
import { HttpServer } from '../../common/http.ts';
import { createLogger } from '../../common/logger.ts';
import type { Handlers } from '../../common/runner.ts';
import { handlers as inventory } from '../../services/inventory/handlers.ts';
import { addRoutes as inventoryRoutes } from '../../services/inventory/routes.ts';
import { handlers as orderCreation } from '../../services/order-creation/handlers.ts';
import { OrderWatch, addRoutes as orderRoutes } from '../../services/order-creation/routes.ts';
import { handlers as replenishment } from '../../services/replenishment/handlers.ts';
import { addRoutes as replenishmentRoutes } from '../../services/replenishment/routes.ts';
import { handlers as shipment } from '../../services/shipment/handlers.ts';
import { addRoutes as shipmentRoutes } from '../../services/shipment/routes.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const HANDLERS: Record<ServiceName, Handlers<never>> = {
  'order-creation': orderCreation as Handlers<never>,
  inventory: inventory as Handlers<never>,
  replenishment: replenishment as Handlers<never>,
  shipment: shipment as Handlers<never>,
};

/** saga.md's routing table: who consumes each key (order-creation also keeps every order event in its timeline). */
const CONSUMED_BY: Record<RoutingKey, ServiceName[]> = {
  'order.created': ['inventory'],
  'inventory.reserved': ['shipment', 'order-creation'],
  'inventory.backordered': ['replenishment', 'order-creation'],
  'inventory.rejected': ['order-creation'],
  'inventory.released': ['order-creation'],
  'stock.low': ['replenishment'],
  'replenishment.completed': ['inventory', 'order-creation'],
  'replenishment.failed': ['inventory', 'order-creation'],
  'replenishment.cancelled': ['order-creation'],
  'shipment.dispatched': ['inventory', 'order-creation'],
  'shipment.failed': ['order-creation'],
  'shipment.cancelled': ['order-creation'],
  'shipment.cancel_rejected': ['order-creation'],
  'order.cancel_requested': ['shipment'],
  'order.cancelled': ['inventory', 'shipment', 'replenishment'],
  'order.completed': [],
};

/** The service's HTTP server with its routes added (none of them called). */
function serverOf(service: ServiceName): HttpServer {
  const config = loadConfig(service, {});
  const http = new HttpServer({ config, log: createLogger(service, 'silent'), checks: () => ({}) });
  const none = {} as never;
  if (service === 'order-creation')
    orderRoutes(http, { db: none, runner: none, config, watch: new OrderWatch() });
  if (service === 'inventory') inventoryRoutes(http, none);
  if (service === 'replenishment') replenishmentRoutes(http, none);
  if (service === 'shipment') shipmentRoutes(http, none);
  return http;
}

/** The routes a server answers that the document must describe: all but those outside it on purpose. */
const documentedServed = (http: HttpServer): string[] =>
  http.routes.filter((route) => !http.undocumentedRoutes.includes(route)).sort();

const servedRoutes = (service: ServiceName): string[] => documentedServed(serverOf(service));

function documentedRoutes(service: ServiceName): string[] {
  const { paths } = contracts().document as { paths: Record<string, Record<string, unknown>> };
  const out: string[] = [];
  for (const [path, item] of Object.entries(paths)) {
    const owners = item['x-service'];
    if (!(Array.isArray(owners) ? owners.includes(service) : owners === service)) continue;
    for (const method of ['get', 'post', 'put', 'patch', 'delete'])
      if (item[method]) out.push(`${method.toUpperCase()} ${path}`);
  }
  return out.sort();
}

describe('the HTTP routes', () => {
  it.each(SERVICES)('of %s are exactly the ones the OpenAPI document gives it', (service) => {
    expect(servedRoutes(service)).toEqual(documentedRoutes(service));
  });

  it('leave out a route outside the document on purpose, and refuse one not declared so', () => {
    const http = serverOf('inventory');
    const metrics = () => ({ status: 200, body: '' });

    http.route('get', '/metrics', metrics, { documented: false });

    expect(http.routes).toContain('GET /metrics');
    expect(documentedServed(http)).toEqual(documentedRoutes('inventory'));
    expect(() => http.route('get', '/dashboard', metrics)).toThrow(
      'GET /dashboard is not in openapi/openapi.json: document it first',
    );
    expect(() => http.route('get', '/stock', metrics, { documented: false })).toThrow(
      'GET /stock is in openapi/openapi.json',
    );
  });

  it('cover every path of the document', () => {
    const { paths } = contracts().document as { paths: Record<string, unknown> };
    const served = new Set(SERVICES.flatMap(servedRoutes).map((r) => r.split(' ')[1]));
    expect(Object.keys(paths).filter((p) => !served.has(p))).toEqual([]);
  });
});

describe('the subscriptions', () => {
  it.each(SERVICES)('of %s match the routing table of saga.md', (service) => {
    const expected = ROUTING_KEYS.filter((key) => CONSUMED_BY[key].includes(service));
    expect(Object.keys(HANDLERS[service]).sort()).toEqual(expected.sort());
  });

  it.each(SERVICES)('of %s are written out, key by key, in the one map of its handlers.ts', (service) => {
    const text = readFileSync(join(ROOT, 'services', service, 'handlers.ts'), 'utf8');
    const map = /export const handlers[^=]*= \{([\s\S]*?)\n\};/.exec(text)?.[1] ?? '';
    const written = [...map.matchAll(/^\s*'([a-z]+\.[a-z_]+)': \w+,$/gm)].map((m) => m[1]);
    expect(map, 'no spread: every subscription is visible here').not.toContain('...');
    expect(written.sort()).toEqual(Object.keys(HANDLERS[service]).sort());
  });

  it('leave no routing key without a consumer but the notifications, so mandatory publishing never bounces', () => {
    const consumed = new Set(SERVICES.flatMap((s) => Object.keys(HANDLERS[s])));
    expect(ROUTING_KEYS.filter((k) => !consumed.has(k))).toEqual([...NOTIFICATIONS]);
  });
});

describe('the canvas at the top of each main.ts', () => {
  const canvas = (service: ServiceName) => {
    const text = readFileSync(join(ROOT, 'services', service, 'main.ts'), 'utf8');
    const block = (label: string) => {
      const match = new RegExp(`${label}:([\\s\\S]*?)(?:\\n \\* [A-Z][a-z]+:|\\n \\*/)`).exec(text);
      return new Set(match?.[1]?.match(/[a-z]+\.[a-z_]+/g) ?? []);
    };
    return { consumes: block('Consumes'), emits: block('Emits') };
  };

  it.each(SERVICES)('of %s lists what it consumes and emits', (service) => {
    const { consumes, emits } = canvas(service);
    const own = ROUTING_KEYS.filter((key) => EMITTED_BY[key] === service);
    expect([...emits].sort()).toEqual(own.sort());
    const foreign = Object.keys(HANDLERS[service]).filter((key) => EMITTED_BY[key as RoutingKey] !== service);
    for (const key of foreign) expect(consumes, `${service} canvas misses ${key}`).toContain(key);
  });
});

/** The project's own modules (relative to the root) each module imports, type-only imports included. */
function importsOf(module: string): string[] {
  const text = readFileSync(join(ROOT, module), 'utf8');
  return [...text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)].map((m) =>
    relative(ROOT, resolve(ROOT, dirname(module), m[1] as string)),
  );
}

const modulesUnder = (folder: string): string[] =>
  readdirSync(join(ROOT, folder), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts'))
    .map((file) => join(folder, file));

describe('the direction of imports', () => {
  it('common/ imports neither a service nor a compensation', () => {
    for (const module of modulesUnder('common'))
      expect(
        importsOf(module).filter((m) => !m.startsWith('common/')),
        module,
      ).toEqual([]);
  });

  it.each(SERVICES)('services/%s imports common/, itself and its own compensations only', (service) => {
    const allowed = ['common/', `services/${service}/`, `compensation/${service}.ts`];
    for (const module of modulesUnder(`services/${service}`)) {
      const foreign = importsOf(module).filter((m) => !allowed.some((a) => m.startsWith(a)));
      expect(foreign, module).toEqual([]);
    }
  });

  it('compensation code never imports back what imports it', () => {
    for (const compensation of modulesUnder('compensation')) {
      const service = `services/${compensation.replace(/^compensation\/|\.ts$/g, '')}/`;
      const seen = new Set<string>();
      const visit = (module: string): void => {
        for (const imported of importsOf(module)) {
          expect(imported, `${compensation} reaches ${module}, which imports ${imported}`).not.toMatch(
            /^compensation\//,
          );
          if (!seen.has(imported)) {
            seen.add(imported);
            visit(imported);
          }
        }
      };
      visit(compensation);
      const outside = [...seen].filter((m) => !m.startsWith('common/') && !m.startsWith(service));
      expect(outside, `${compensation} uses common/ and its own service only`).toEqual([]);
    }
  });

  it.each(SERVICES)('services/%s takes from compensation/ only what its handlers.ts registers', (service) => {
    for (const module of modulesUnder(`services/${service}`)) {
      const text = readFileSync(join(ROOT, module), 'utf8');
      const taken = [...text.matchAll(/^import \{([^}]*)\} from '[./]+\/compensation\/[^']+';$/gm)].flatMap(
        (m) => (m[1] as string).split(',').map((name) => name.trim()),
      );
      if (!module.endsWith('/handlers.ts')) {
        expect(taken, `${module} imports a compensation`).toEqual([]);
        continue;
      }
      const registered = [...text.matchAll(/^\s*'[a-z]+\.[a-z_]+': (\w+),$/gm)].map((m) => m[1]);
      for (const name of taken)
        expect(registered, `${module} imports ${name} from compensation/`).toContain(name);
    }
  });
});

describe('the event schemas', () => {
  it('exist for every routing key and nothing else', () => {
    const { schemas } = (contracts().document as { components: { schemas: Record<string, unknown> } })
      .components;
    const eventSchemas = Object.keys(schemas).filter((name) => /^[a-z]+\.[a-z_]+$/.test(name));
    expect(eventSchemas.sort()).toEqual([...ROUTING_KEYS].sort());
  });

  it('reject unknown fields and name every invalid one', () => {
    const problems = contracts().validator(
      '#/components/schemas/shipment.dispatched',
      '/data',
    )({
      orderId: 'not-a-uuid',
      shipmentId: crypto.randomUUID(),
      carrier: 'DHL',
      extra: true,
    });
    expect(problems.map((p) => p.pointer).sort()).toEqual([
      '/data/extra',
      '/data/orderId',
      '/data/trackingNumber',
    ]);
  });
});
