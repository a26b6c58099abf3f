import { describe, expect, it } from 'vitest';

import { ResponseError } from '../src/api';
import { IIdentity, IRunSummary } from '../src/tokens';
import {
  describeDispatcher,
  NO_FILTER,
  canCancel,
  chartPaths,
  defaultMetric,
  differingParams,
  formatBytes,
  formatDuration,
  formatMetric,
  formatValue,
  gpusByWorker,
  keyParams,
  machineRows,
  memoryPercent,
  nextSort,
  noGpus,
  packageRows,
  pagesFor,
  queuePositions,
  runQuery,
  serverProblem,
  sortDirection,
  sparklinePath,
  sweepTarget,
  visibleRange
} from '../src/view';

function run(id: number, extra: Partial<IRunSummary> = {}): IRunSummary {
  return {
    id,
    project: 'default',
    name: `run ${id}`,
    kind: 'notebook',
    status: 'queued',
    user: 'alice',
    queue: 'default',
    requested_gpus: 0,
    worker: null,
    attempt: 1,
    parent_id: null,
    tags: [],
    created_at: `2026-11-23T10:00:0${id}`,
    started_at: null,
    ended_at: null,
    duration: null,
    params: {},
    metrics: {},
    ...extra
  };
}

describe('sorting', () => {
  it('sorts a new column descending first, then flips it', () => {
    expect(nextSort('-created_at', 'name')).toBe('-name');
    expect(nextSort('-name', 'name')).toBe('name');
    expect(nextSort('name', 'name')).toBe('-name');
  });

  it('reports the direction only for the sorted column', () => {
    expect(sortDirection('-metrics.loss', 'metrics.loss')).toBe('desc');
    expect(sortDirection('user', 'user')).toBe('asc');
    expect(sortDirection('user', 'name')).toBeNull();
  });
});

describe('the runs query', () => {
  it('leaves out empty filters and trims the text', () => {
    expect(runQuery(NO_FILTER, '-created_at', 0, 100)).toEqual({
      project: undefined,
      status: undefined,
      user: undefined,
      q: undefined,
      sort: '-created_at',
      offset: 0,
      limit: 100,
      spark: undefined
    });
    const query = runQuery(
      { project: 'seg', statuses: ['failed'], user: 'bob', text: '  unet ' },
      'name',
      200,
      100,
      'loss'
    );
    expect(query).toMatchObject({
      project: 'seg',
      status: ['failed'],
      user: 'bob',
      q: 'unet',
      offset: 200,
      spark: 'loss'
    });
  });
});

describe('virtualization', () => {
  it('renders the visible rows plus an overscan, clipped to the total', () => {
    expect(visibleRange(0, 260, 26, 10000, 5)).toEqual({ start: 0, end: 15 });
    expect(visibleRange(26000, 260, 26, 10000, 5)).toEqual({ start: 995, end: 1015 });
    expect(visibleRange(26 * 9995, 260, 26, 10000, 5)).toEqual({ start: 9990, end: 10000 });
    expect(visibleRange(0, 260, 26, 0)).toEqual({ start: 0, end: 0 });
  });

  it('names the pages that hold a range of rows', () => {
    expect(pagesFor(0, 15, 100)).toEqual([0]);
    expect(pagesFor(95, 120, 100)).toEqual([0, 1]);
    expect(pagesFor(10, 10, 100)).toEqual([]);
  });
});

describe('formatting', () => {
  it('formats durations, sizes and values', () => {
    expect(formatDuration(null)).toBe('—');
    expect(formatDuration(42.4)).toBe('42s');
    expect(formatDuration(185)).toBe('3m 05s');
    expect(formatDuration(3720)).toBe('1h 02m');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1.5 * 2 ** 30)).toBe('1.5 GiB');
    expect(formatValue(0.123456)).toBe('0.1235');
    expect(formatValue(3)).toBe('3');
    expect(formatValue(1e-7)).toBe('1.000e-7');
    expect(formatValue({ a: 1 })).toBe('{"a":1}');
  });

  it('shows a metric that became NaN or infinite as text', () => {
    expect(formatMetric('NaN')).toBe('NaN');
    expect(formatMetric('Infinity')).toBe('∞');
    expect(formatMetric('-Infinity')).toBe('-∞');
    expect(formatMetric(NaN)).toBe('NaN');
    expect(formatMetric(0.123456)).toBe('0.1235');
    expect(formatMetric(null)).toBe('—');
    expect(formatMetric(undefined)).toBe('—');
  });

  it('keeps user text as text: key params are plain strings', () => {
    expect(keyParams({ lr: 0.01, arch: '<b>unet</b>', epochs: 3, seed: 1 })).toBe(
      'lr=0.01 arch=<b>unet</b> epochs=3'
    );
  });
});

describe('the Params column', () => {
  const sweep = [0.01, 0.1].flatMap((lr, i) =>
    [16, 64].map((hidden, j) =>
      run(2 * i + j + 1, { params: { device: 'cpu', epochs: 3, lr, hidden } })
    )
  );

  it('shows the parameters that differ among the listed runs, not the constants', () => {
    const keys = differingParams(sweep);
    expect(keys).toEqual(['lr', 'hidden']);
    expect(keyParams(sweep[3].params, 3, keys)).toBe('lr=0.1 hidden=64');
  });

  it('counts only the runs that have a parameter, and rows without one show their own', () => {
    const report = run(9, { params: { sweep: 1 } });
    const keys = differingParams([...sweep, report]);
    expect(keys).toEqual(['lr', 'hidden']);
    expect(keyParams(report.params, 3, keys)).toBe('sweep=1');
  });

  it('shows the first parameters when nothing differs or there is one run', () => {
    const same = [
      run(1, { params: { device: 'cpu', epochs: 3 } }),
      run(2, { params: { device: 'cpu', epochs: 3 } })
    ];
    expect(differingParams(same)).toBeNull();
    expect(differingParams(sweep.slice(0, 1))).toBeNull();
    expect(differingParams([])).toBeNull();
    expect(keyParams(same[0].params, 3, null)).toBe('device=cpu epochs=3');
  });

  it('compares values by content, so equal lists and objects are constants', () => {
    const runs = [
      run(1, { params: { layers: [1, 2], lr: 1 } }),
      run(2, { params: { layers: [1, 2], lr: 2 } })
    ];
    expect(differingParams(runs)).toEqual(['lr']);
  });
});

describe('the metric picker', () => {
  const keys = ['accuracy', 'loss', 'val_accuracy'];

  it('defaults to the metric picked last, else the sweep target, else the first', () => {
    expect(defaultMetric(keys, 'loss', 'val_accuracy')).toBe('loss');
    expect(defaultMetric(keys, '', 'val_accuracy')).toBe('val_accuracy');
    expect(defaultMetric(keys, '', null)).toBe('accuracy');
    expect(defaultMetric([], '', null)).toBe('');
  });

  it('skips a remembered or target metric the listed runs do not have', () => {
    expect(defaultMetric(keys, 'bleu', 'val_accuracy')).toBe('val_accuracy');
    expect(defaultMetric(keys, 'bleu', 'f1')).toBe('accuracy');
  });

  it("finds the sweep's target in a sweep's or its report's parameters", () => {
    const report = run(7, { kind: 'notebook', params: { sweep: 1, target: 'val_loss' } });
    expect(sweepTarget([run(1), report])).toBe('val_loss');
    expect(sweepTarget([run(2, { kind: 'sweep', params: { target: 'loss' } })])).toBe('loss');
    // A training run's own `target` parameter says nothing about what a sweep is judged on
    expect(sweepTarget([run(3, { params: { target: 'dog' } })])).toBeNull();
  });
});

describe('charts', () => {
  it('draws a sparkline across the box and breaks it at missing values', () => {
    expect(sparklinePath([], 10, 10)).toBe('');
    expect(sparklinePath([0, 1], 10, 10)).toBe('M0,10L10,0');
    expect(sparklinePath([1, null, 3], 10, 10)).toBe('M0,10M10,0');
    expect(sparklinePath([2, 2], 10, 10)).toBe('M0,5L10,5');
  });

  it('skips NaN and infinite values in sparklines and charts', () => {
    expect(sparklinePath([0, 'NaN', 1], 10, 10)).toBe('M0,10M10,0');
    expect(sparklinePath(['Infinity', 0, 1, '-Infinity'], 30, 10)).toBe('M10,10L20,0');
    expect(sparklinePath(['NaN', 'NaN'], 10, 10)).toBe('');
    const { paths, yRange } = chartPaths([{ xs: [0, 1, 2], ys: [0, 'Infinity', 1] }], 20, 10);
    expect(yRange).toEqual([0, 1]);
    expect(paths[0]).toBe('M0,10M20,0');
  });

  it('puts several series on shared axes', () => {
    const { paths, xRange, yRange } = chartPaths(
      [
        { xs: [0, 10], ys: [0, 1] },
        { xs: [0, 5], ys: [2, 2] }
      ],
      100,
      20
    );
    expect(xRange).toEqual([0, 10]);
    expect(yRange).toEqual([0, 2]);
    expect(paths[0]).toBe('M0,20L100,10');
    expect(paths[1]).toBe('M0,0L50,0');
  });
});

describe('queues and GPUs', () => {
  it('numbers queued runs per queue, oldest first', () => {
    const positions = queuePositions([
      run(3),
      run(1),
      run(2, { queue: 'gpu' }),
      run(4, { status: 'running' })
    ]);
    expect([...positions.entries()].sort()).toEqual([
      [1, 1],
      [2, 1],
      [3, 2]
    ]);
  });

  it('lets owners, leads of the project and admins cancel what is still active', () => {
    const me = (user: string, roles: Partial<IIdentity> = {}): IIdentity => ({
      user,
      admin: false,
      roles: ['researcher'],
      leads: [],
      ...roles
    });
    expect(canCancel(run(1), me('alice'))).toBe(true);
    expect(canCancel(run(1), me('bob'))).toBe(false);
    expect(canCancel(run(1), me('bob', { admin: true }))).toBe(true);
    expect(canCancel(run(1), me('carol', { leads: ['default'] }))).toBe(true);
    expect(canCancel(run(1), me('carol', { leads: ['mri'] }))).toBe(false);
    expect(canCancel(run(1, { status: 'completed' }), me('alice', { admin: true }))).toBe(false);
  });

  it('groups GPUs by worker and computes memory use', () => {
    const gpu = (worker_id: string, index: number) => ({
      worker_id,
      index,
      name: 'H100',
      time: 0,
      utilization: 0,
      memory_used: 1,
      memory_total: 4,
      temperature: null,
      power: null,
      run_id: null,
      user: null,
      idle: true
    });
    const grouped = gpusByWorker([gpu('w2', 1), gpu('w1', 0), gpu('w2', 0)]);
    expect([...grouped.keys()]).toEqual(['w1', 'w2']);
    expect(grouped.get('w2')?.map(g => g.index)).toEqual([0, 1]);
    expect(memoryPercent(gpu('w1', 0))).toBe(25);
    expect(memoryPercent({ memory_used: null, memory_total: 4 })).toBeNull();
  });
});

describe('a pool without GPUs', () => {
  it('says plainly that there are no GPUs, and how many workers run on CPU', () => {
    expect(noGpus(2, 0)).toBe('No GPUs in this pool: 2 workers, CPU only.');
    expect(noGpus(1, 0)).toBe('No GPUs in this pool: 1 worker, CPU only.');
    expect(noGpus(0, 0)).toBe('No GPUs: no live workers.');
    expect(noGpus(2, 2)).toBeNull();
  });
});

describe('the server check', () => {
  it('explains a missing server extension and how to fix it', () => {
    const problem = serverProblem(null, new ResponseError(404, 'Not Found'));
    expect(problem).toContain('not running');
    expect(problem).toContain('jupyter server extension list');
  });

  it('explains an older server extension', () => {
    expect(serverProblem({ version: '0.0.1', api: 0 }, null)).toContain('older');
    expect(serverProblem({ version: '0.1.0', api: 1 }, null)).toBeNull();
  });
});

describe('the environment of a run', () => {
  it('lists recorded packages by name and version', () => {
    expect(packageRows(['numpy==2.1.0', 'torch==2.13.0+cpu', 'odd'])).toEqual([
      ['numpy', '2.1.0'],
      ['torch', '2.13.0+cpu'],
      ['odd', '']
    ]);
    expect(packageRows({ numpy: '2.1.0' })).toEqual([['numpy', '2.1.0']]);
    expect(packageRows(undefined)).toEqual([]);
  });

  it("shows a notebook job's machine as a cell's: versions, GPUs and where", () => {
    const rows = machineRows({
      python: '3.11.7',
      platform: 'Linux-6.1',
      hostname: 'gpu-3',
      versions: { python: '3.11.7', os: 'Linux-6.1', torch: '2.13.0', cuda: '12.1' },
      gpus: [{ index: 1, name: 'H200', driver: '550.54' }],
      notebook: '/home/a/train.ipynb',
      rerun_of: 7
    });
    expect(rows).toEqual([
      ['python', '3.11.7'],
      ['platform', 'Linux-6.1'],
      ['torch', '2.13.0'],
      ['cuda', '12.1'],
      ['gpus', '1: H200 (driver 550.54)'],
      ['hostname', 'gpu-3'],
      ['notebook', '/home/a/train.ipynb'],
      ['rerun of', 7]
    ]);
    expect(machineRows({ versions: { cuda: null }, gpus: [] })).toEqual([]);
  });
});

describe('describeDispatcher', () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  const lease = {
    server: 'lab-1:4242:1764500000/1',
    user: 'alice',
    url: 'http://lab-1:8888/',
    since: now / 1000 - 90,
    this_server: false
  };

  it('names the other server that dispatches, and for how long', () => {
    expect(describeDispatcher(lease, now)).toBe(
      "Dispatching: alice's server at http://lab-1:8888/, for 1m"
    );
  });

  it('says when it is this server', () => {
    expect(describeDispatcher({ ...lease, this_server: true }, now)).toBe(
      'Dispatching: this server, for 1m'
    );
  });

  it('says when no server dispatches', () => {
    expect(describeDispatcher(null, now)).toMatch(/^No server dispatches jobs now/);
  });
});
