/**
 * Prometheus text exposition (format 0.0.4), written by hand: the handful of series the daemon
 * exports do not justify a client library.
 */

/** Upper bounds (seconds) of the request latency histogram. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

interface Histogram {
  method: string;
  route: string;
  counts: number[];
  sum: number;
  count: number;
}

/** Store figures sampled at scrape time (null when sampling failed). */
export interface StoreSample {
  users: number;
  bytes: number;
}

/** Escapes a label value as the exposition format requires. */
function label(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function num(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

/** The off-site uploader's state at scrape time (absent when no off-site target is configured). */
export interface OffsiteSample {
  lagSeconds: number;
  pending: number;
  failures: number;
  uploaded: number;
}

/** The daemon's counters; one instance per app. */
export class Metrics {
  private readonly requests = new Map<string, { method: string; route: string; status: number; n: number }>();
  private readonly latency = new Map<string, Histogram>();
  /** Scheduled and API backups that failed. */
  backupFailures = 0;
  /** Retention runs after a scheduled backup that failed. */
  pruneFailures = 0;
  /** Scheduled backups that completed. */
  scheduledBackups = 0;
  /** Newest backup this process made; the directory listing covers the others. */
  lastBackupAt: Date | null = null;

  noteBackup(at: Date): void {
    if (!this.lastBackupAt || at > this.lastBackupAt) this.lastBackupAt = at;
  }

  /** Records one finished request; `route` is the route pattern, never the raw URL (bounded cardinality). */
  observe(method: string, route: string, status: number, seconds: number): void {
    const rk = `${method} ${route} ${status}`;
    const r = this.requests.get(rk);
    if (r) r.n++;
    else this.requests.set(rk, { method, route, status, n: 1 });

    const hk = `${method} ${route}`;
    let h = this.latency.get(hk);
    if (!h) {
      h = { method, route, counts: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.latency.set(hk, h);
    }
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= (LATENCY_BUCKETS[i] ?? Infinity)) h.counts[i] = (h.counts[i] ?? 0) + 1;
    }
    h.sum += seconds;
    h.count++;
  }

  /**
   * The exposition text. `store` is null when the store could not be sampled (the gauges are then
   * left out rather than reported as zero); `lastBackupAt` null means no backup exists, reported as
   * +Inf so an "older than" alert fires.
   */
  render(sample: { store: StoreSample | null; lastBackupAt: Date | null; now?: Date; offsite?: OffsiteSample }): string {
    const out: string[] = [];
    const now = sample.now ?? new Date();

    out.push('# HELP chatmem_http_requests_total HTTP requests answered, by method, route pattern and status.');
    out.push('# TYPE chatmem_http_requests_total counter');
    for (const r of [...this.requests.values()].sort((a, b) => a.route.localeCompare(b.route) || a.method.localeCompare(b.method) || a.status - b.status)) {
      out.push(`chatmem_http_requests_total{method="${label(r.method)}",route="${label(r.route)}",status="${r.status}"} ${r.n}`);
    }

    out.push('# HELP chatmem_http_request_duration_seconds Time from request received to response sent.');
    out.push('# TYPE chatmem_http_request_duration_seconds histogram');
    for (const h of [...this.latency.values()].sort((a, b) => a.route.localeCompare(b.route) || a.method.localeCompare(b.method))) {
      const labels = `method="${label(h.method)}",route="${label(h.route)}"`;
      LATENCY_BUCKETS.forEach((le, i) => out.push(`chatmem_http_request_duration_seconds_bucket{${labels},le="${le}"} ${h.counts[i] ?? 0}`));
      out.push(`chatmem_http_request_duration_seconds_bucket{${labels},le="+Inf"} ${h.count}`);
      out.push(`chatmem_http_request_duration_seconds_sum{${labels}} ${num(h.sum)}`);
      out.push(`chatmem_http_request_duration_seconds_count{${labels}} ${h.count}`);
    }

    if (sample.store) {
      out.push('# HELP chatmem_store_users Users in the store.');
      out.push('# TYPE chatmem_store_users gauge');
      out.push(`chatmem_store_users ${sample.store.users}`);
      out.push('# HELP chatmem_store_bytes Bytes of serialised records (roughly the size of a full backup).');
      out.push('# TYPE chatmem_store_bytes gauge');
      out.push(`chatmem_store_bytes ${sample.store.bytes}`);
    }

    const age = sample.lastBackupAt ? Math.max(0, (now.getTime() - sample.lastBackupAt.getTime()) / 1000) : Infinity;
    out.push('# HELP chatmem_last_backup_age_seconds Seconds since the newest backup was written (+Inf when there is none).');
    out.push('# TYPE chatmem_last_backup_age_seconds gauge');
    out.push(`chatmem_last_backup_age_seconds ${num(age)}`);

    out.push('# HELP chatmem_backup_failures_total Backups (scheduled or requested through the API) that failed.');
    out.push('# TYPE chatmem_backup_failures_total counter');
    out.push(`chatmem_backup_failures_total ${this.backupFailures}`);
    out.push('# HELP chatmem_scheduled_backups_total Scheduled backups written.');
    out.push('# TYPE chatmem_scheduled_backups_total counter');
    out.push(`chatmem_scheduled_backups_total ${this.scheduledBackups}`);
    out.push('# HELP chatmem_prune_failures_total Retention runs after a scheduled backup that failed.');
    out.push('# TYPE chatmem_prune_failures_total counter');
    out.push(`chatmem_prune_failures_total ${this.pruneFailures}`);

    if (sample.offsite) {
      out.push('# HELP chatmem_offsite_upload_lag_seconds Age of the oldest verified backup not yet copied off-site (0 when none waits).');
      out.push('# TYPE chatmem_offsite_upload_lag_seconds gauge');
      out.push(`chatmem_offsite_upload_lag_seconds ${num(sample.offsite.lagSeconds)}`);
      out.push('# HELP chatmem_offsite_pending_backups Backups waiting for their off-site upload.');
      out.push('# TYPE chatmem_offsite_pending_backups gauge');
      out.push(`chatmem_offsite_pending_backups ${sample.offsite.pending}`);
      out.push('# HELP chatmem_offsite_upload_failures_total Off-site upload attempts that failed (each retry counts).');
      out.push('# TYPE chatmem_offsite_upload_failures_total counter');
      out.push(`chatmem_offsite_upload_failures_total ${sample.offsite.failures}`);
      out.push('# HELP chatmem_offsite_uploads_total Backups copied off-site by this process.');
      out.push('# TYPE chatmem_offsite_uploads_total counter');
      out.push(`chatmem_offsite_uploads_total ${sample.offsite.uploaded}`);
    }

    return out.join('\n') + '\n';
  }
}

/** Content type of the Prometheus text format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
