/**
 * Decoding a delivery: the event it carries, validated against the contract, and the saga context
 * its headers bring, which the events its handling causes carry on.
 */
import { contracts } from './contracts.ts';
import { PermanentError } from './errors.ts';
import { FAIL_AT_VALUES, type FailAt, isRoutingKey, type SagaContext, type SagaEvent } from './events.ts';
import { SAGA_HEADER } from './headers.ts';
import type { Delivery } from './transport.ts';

/** Parses and validates a delivery; throws a PermanentError that says what is wrong with it. */
export function decode(message: Pick<Delivery, 'content' | 'type'>): SagaEvent {
  let body: unknown;
  try {
    body = JSON.parse(message.content.toString('utf8'));
  } catch (error) {
    throw new PermanentError('malformed-json', `body is not JSON: ${(error as Error).message}`);
  }
  const envelopeProblems = contracts().validator('#/components/schemas/Envelope')(body);
  if (envelopeProblems.length > 0) {
    throw new PermanentError('schema-invalid', `invalid envelope: ${JSON.stringify(envelopeProblems)}`);
  }
  const event = body as SagaEvent;
  if (!isRoutingKey(event.type))
    throw new PermanentError('unknown-routing-key', `unknown event type ${event.type}`);
  const { type } = message;
  if (type !== undefined && type !== event.type) {
    throw new PermanentError(
      'schema-invalid',
      `AMQP type ${String(type)} differs from the body's type ${event.type}`,
    );
  }
  const problems = contracts().validator(`#/components/schemas/${event.type}`, '/data')(event.data);
  if (problems.length > 0)
    throw new PermanentError('schema-invalid', `invalid ${event.type}: ${JSON.stringify(problems)}`);
  return event;
}

function stringHeader(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** The saga context of the event being handled: its order, its trace, itself as the cause, its x-fail-at. */
export function sagaContextOf(event: SagaEvent, headers: Delivery['headers']): SagaContext {
  const failAt = headers[SAGA_HEADER.failAt] as FailAt;
  return {
    orderId: event.orderId,
    traceparent: stringHeader(headers[SAGA_HEADER.traceparent]),
    causationId: event.id,
    failAt: FAIL_AT_VALUES.includes(failAt) ? failAt : undefined,
  };
}
