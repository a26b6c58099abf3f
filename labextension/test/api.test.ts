import { ServerConnection } from '@jupyterlab/services';
import { describe, expect, it } from 'vitest';

import { ResponseError, encodeQuery, errorFrom, request } from '../src/api';

/** Settings whose fetch answers from `respond` and records the URLs asked for. */
function settings(respond: (request: Request) => Response | Promise<Response>) {
  const urls: string[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init);
    urls.push(request.url);
    return respond(request);
  };
  return {
    urls,
    settings: ServerConnection.makeSettings({
      baseUrl: 'http://lab.test/base/',
      wsUrl: 'ws://lab.test/base/',
      token: 'secret',
      fetch: fetch as typeof globalThis.fetch,
      Request,
      Headers
    })
  };
}

describe('encodeQuery', () => {
  it('repeats array values and leaves out empty ones', () => {
    expect(encodeQuery({ status: ['queued', 'running'], q: '', user: undefined, limit: 5 })).toBe(
      '?status=queued&status=running&limit=5'
    );
    expect(encodeQuery({ q: 'a b&c' })).toBe('?q=a%20b%26c');
    expect(encodeQuery({})).toBe('');
  });
});

describe('request', () => {
  it('calls the labrun API under the base URL and parses JSON', async () => {
    const { urls, settings: s } = settings(
      () => new Response('{"version": "0.1.0", "api": 1}', { status: 200 })
    );
    const answer = await request<{ api: number }>('runs', {
      query: { status: ['queued'] },
      settings: s
    });
    expect(answer.api).toBe(1);
    // Jupyter's ServerConnection adds a cache-busting number to GETs.
    expect(urls).toHaveLength(1);
    expect(urls[0]).toMatch(/^http:\/\/lab\.test\/base\/labrun\/api\/v1\/runs\?status=queued&\d+$/);
  });

  it("turns a failure into a ResponseError with the server's message", async () => {
    const { settings: s } = settings(
      () =>
        new Response('{"message": "no queue named \'gpu\'", "code": "not_found"}', { status: 404 })
    );
    const error = await request('queues/gpu', { settings: s }).catch(e => e);
    expect(error).toBeInstanceOf(ResponseError);
    expect(error.status).toBe(404);
    expect(error.code).toBe('not_found');
    expect(error.message).toBe("no queue named 'gpu'");
  });

  it('sends a JSON body', async () => {
    let sent = '';
    const { settings: s } = settings(async request => {
      sent = await request.text();
      return new Response('{"id": 3}', { status: 201 });
    });
    await request('jobs', { method: 'POST', body: { notebook: 'a.ipynb' }, settings: s });
    expect(JSON.parse(sent)).toEqual({ notebook: 'a.ipynb' });
  });
});

describe('errorFrom', () => {
  it("uses Jupyter's reason, and never echoes an HTML page", () => {
    expect(errorFrom(403, { reason: 'Forbidden' }).message).toBe('Forbidden');
    expect(errorFrom(502, undefined, '<html>Bad gateway</html>').message).toBe(
      'the labrun server answered 502'
    );
    expect(errorFrom(500, undefined, 'boom').message).toBe('the labrun server answered 500: boom');
  });
});
