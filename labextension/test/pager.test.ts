import { describe, expect, it } from 'vitest';

import { RunsPager } from '../src/pager';
import { IRunList, IRunQuery } from '../src/tokens';
import { NO_FILTER } from '../src/view';

/** A server of `total` runs that answers pages in memory and records every query. */
function server(total: number) {
  const queries: IRunQuery[] = [];
  const fetch = async (query: IRunQuery): Promise<IRunList> => {
    queries.push(query);
    // The cursor names the position after a page (the real server's names a row).
    const offset = query.cursor ? Number(query.cursor.slice('after-'.length)) : (query.offset ?? 0);
    const limit = query.limit ?? 50;
    const matching = query.q ? Math.floor(total / 10) : total;
    const runs = [];
    for (let i = offset; i < Math.min(matching, offset + limit); i++) {
      runs.push({ id: matching - i, name: `${query.q ?? 'run'} ${i}` } as never);
    }
    const next_cursor = offset + limit < matching ? `after-${offset + limit}` : null;
    return {
      runs,
      total: matching,
      offset,
      limit,
      next_cursor,
      sparklines: { [matching]: [1, 2] }
    };
  };
  return { fetch, queries };
}

describe('RunsPager', () => {
  it('fetches the first page, then only the pages scrolled into view', async () => {
    const { fetch, queries } = server(10000);
    const pager = new RunsPager(fetch, 100);
    await pager.query(NO_FILTER, '-created_at', 'loss');
    expect(pager.total).toBe(10000);
    expect(pager.row(0)?.id).toBe(10000);
    expect(pager.row(150)).toBeUndefined();
    expect(pager.spark(10000)).toEqual([1, 2]);

    await pager.ensure(5000, 5030);
    expect(pager.row(5010)?.id).toBe(5000 - 10);
    expect(queries.map(q => q.offset)).toEqual([0, 5000]);
    // Rows already fetched are not fetched again.
    await pager.ensure(5000, 5030);
    expect(queries).toHaveLength(2);
    expect(queries[1]).toMatchObject({ sort: '-created_at', limit: 100, spark: 'loss' });
  });

  it('asks for the page after a fetched one by its cursor, and for others by offset', async () => {
    const { fetch, queries } = server(1000);
    const pager = new RunsPager(fetch, 100);
    await pager.query(NO_FILTER, 'metrics.loss');
    // Scrolled down: the next page follows the first.
    await pager.ensure(150, 180);
    expect(pager.row(150)?.name).toBe('run 150');
    expect(queries[1]).toMatchObject({ cursor: 'after-100', sort: 'metrics.loss', limit: 100 });
    expect(queries[1].offset).toBeUndefined();
    // A jump far down: no page before it, so by offset.
    await pager.ensure(700, 720);
    expect(queries[2]).toMatchObject({ offset: 700 });
    expect(queries[2].cursor).toBeUndefined();
    // The last page has no page after it.
    await pager.ensure(900, 999);
    expect(queries[3]).toMatchObject({ offset: 900 });
    // A refresh refetches the pages on show by offset, so they stay in step.
    await pager.refresh();
    expect(queries.slice(4).map(q => [q.offset, q.cursor])).toEqual([
      [0, undefined],
      [100, undefined],
      [700, undefined],
      [900, undefined]
    ]);
    // A new query forgets the cursors of the old one.
    await pager.query(NO_FILTER, 'name');
    await pager.ensure(100, 110);
    expect(queries.at(-1)).toMatchObject({ cursor: 'after-100', sort: 'name' });
  });

  it('starts over on a new filter and drops the answer to an older query', async () => {
    const { fetch } = server(1000);
    let release: () => void = () => undefined;
    const slow = async (query: IRunQuery) => {
      if (!query.q) {
        await new Promise<void>(resolve => (release = resolve));
      }
      return fetch(query);
    };
    const pager = new RunsPager(slow, 100);
    const first = pager.query(NO_FILTER, '-created_at');
    const filtered = pager.query({ ...NO_FILTER, text: 'unet' }, '-created_at');
    await filtered;
    release();
    await first;
    expect(pager.total).toBe(100);
    expect(pager.row(0)?.name).toBe('unet 0');
  });

  it('keeps the old rows on show until the new query answers', async () => {
    const { fetch } = server(1000);
    let release: () => void = () => undefined;
    const pager = new RunsPager(async query => {
      if (query.q) {
        await new Promise<void>(resolve => (release = resolve));
      }
      return fetch(query);
    }, 100);
    await pager.query(NO_FILTER, '-created_at');
    const filtered = pager.query({ ...NO_FILTER, text: 'unet' }, '-created_at');
    expect(pager.filter.text).toBe('unet');
    expect(pager.row(0)?.name).toBe('run 0');
    expect(pager.total).toBe(1000);
    release();
    await filtered;
    expect(pager.row(0)?.name).toBe('unet 0');
    expect(pager.row(150)).toBeUndefined();
    expect(pager.total).toBe(100);
  });

  it('keeps the error of a failed page and clears it on success', async () => {
    let fail = true;
    const { fetch } = server(10);
    const pager = new RunsPager(async q => {
      if (fail) {
        throw new Error('the labrun server answered 500');
      }
      return fetch(q);
    });
    await pager.query(NO_FILTER, '-created_at');
    expect(pager.error?.message).toBe('the labrun server answered 500');
    fail = false;
    await pager.refresh();
    expect(pager.error).toBeNull();
    expect(pager.total).toBe(10);
  });
});
