import { createLogger, SECRET_FIELDS } from '../../src/logger';

/** Logs one object through the product's logger and returns the line. */
function logged(object: Record<string, unknown>): string {
  const lines: string[] = [];
  createLogger('info', 'test', { write: (line: string) => void lines.push(line) }).info(object, 'a line');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('the logger censors credentials', () => {
  test.each(SECRET_FIELDS)('a field named %s, at the top, nested three levels down and in arrays', (field) => {
    const secret = `s3cr3t-${field}`;
    const line = logged({
      [field]: `${secret}-0`,
      body: { [field]: `${secret}-1`, inner: { [field]: `${secret}-2`, deeper: { [field]: `${secret}-3` } } },
      items: [{ [field]: `${secret}-a` }],
    });
    expect(line).not.toContain(secret);
    expect(line.match(/\[redacted\]/g)).toHaveLength(5);
  });

  test("a request's Authorization header and a response carrying a new party's key and an entity's secret", () => {
    const line = logged({
      req: { method: 'POST', url: '/v1/entities', headers: { authorization: 'Bearer sluice-dev-admin-key', 'idempotency-key': 'k-1' } },
      res: { statusCode: 201, body: { id: 'acme', apiKey: 'sk_acme_x', webhookSecret: 'whsec_y', mainAccountId: 'acme.main' } },
    });
    for (const secret of ['sluice-dev-admin-key', 'sk_acme_x', 'whsec_y']) expect(line).not.toContain(secret);
    // what is not a credential stays readable: idempotency keys, ids, URLs
    const parsed = JSON.parse(line);
    expect(parsed.req.headers['idempotency-key']).toBe('k-1');
    expect(parsed.res.body).toEqual({ id: 'acme', apiKey: '[redacted]', webhookSecret: '[redacted]', mainAccountId: 'acme.main' });
  });
});

describe('an error in a log line', () => {
  test('a tangled error (a cycle through its fields, a getter that throws) is written with its fields and its chain of causes', () => {
    // what a Temporal client error is like: a gRPC status as cause, handles that point back at the error
    const status = Object.assign(new Error('14 UNAVAILABLE: Connection dropped'), { code: 14, details: 'Connection dropped' });
    const error = Object.assign(new Error('Update-With-Start failed', { cause: status }), { handle: {} as Record<string, unknown> });
    error.handle.error = error;
    Object.defineProperty(error, 'metadata', { enumerable: true, get: () => { throw new Error('not readable'); } });
    const lines: string[] = [];
    createLogger('info', 'test', { write: (line: string) => void lines.push(line) }).error({ err: error }, 'unhandled error');
    const { err } = JSON.parse(lines[0]!);
    expect(err).toMatchObject({ type: 'Error', message: 'Update-With-Start failed', causes: [{ type: 'Error', message: '14 UNAVAILABLE: Connection dropped', code: 14, details: 'Connection dropped' }] });
    expect(err.stack).toContain('logger.test.ts');
    expect(lines[0]).not.toContain('unable to serialize');
  });

  test('an error keeps its code; a thrown string is its message', () => {
    const lines: string[] = [];
    const log = createLogger('info', 'test', { write: (line: string) => void lines.push(line) });
    log.error({ err: Object.assign(new TypeError('bad'), { code: 'ERR_X' }) }, 'one');
    log.error({ err: 'just a string' }, 'two');
    expect(JSON.parse(lines[0]!).err).toMatchObject({ type: 'TypeError', name: 'TypeError', message: 'bad', code: 'ERR_X' });
    expect(JSON.parse(lines[1]!).err).toEqual({ message: 'just a string' });
  });
});
