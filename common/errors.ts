/**
 * One small error hierarchy. HTTP maps an AppError to RFC 9457 problem+json; the runner treats a
 * PermanentError as "never retry: dead-letter it", and anything else as a bug or a transient fault.
 */
import type { FieldError } from './contracts.ts';

export class AppError extends Error {
  readonly status: number;
  readonly title: string;
  readonly errors?: FieldError[];

  constructor(status: number, title: string, detail?: string, errors?: FieldError[]) {
    super(detail ?? title);
    this.status = status;
    this.title = title;
    this.errors = errors;
    this.name = new.target.name;
  }

  /** The problem+json body. `type` is a stable identifier of the kind of problem. */
  toProblem(instance?: string): Record<string, unknown> {
    return {
      type: `https://order-saga.dev/problems/${this.title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`,
      title: this.title,
      status: this.status,
      detail: this.message,
      ...(instance ? { instance } : {}),
      ...(this.errors ? { errors: this.errors } : {}),
    };
  }
}

export class ValidationError extends AppError {
  constructor(errors: FieldError[], detail = 'The request has invalid fields; see errors.') {
    super(400, 'Invalid request', detail, errors);
  }
}

export class NotFoundError extends AppError {
  constructor(detail: string) {
    super(404, 'Not found', detail);
  }
}

export class ConflictError extends AppError {
  constructor(detail: string) {
    super(409, 'Conflict', detail);
  }
}

/** A message that no retry can fix: bad JSON, an unknown routing key, a schema violation. */
export class PermanentError extends Error {
  readonly reason: 'malformed-json' | 'unknown-routing-key' | 'schema-invalid' | 'rejected';

  constructor(
    reason: 'malformed-json' | 'unknown-routing-key' | 'schema-invalid' | 'rejected',
    message: string,
  ) {
    super(message);
    this.reason = reason;
    this.name = 'PermanentError';
  }
}
