// Times and durations as people read them.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const rel = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function absolute(iso: string): string {
  const d = new Date(iso);
  return isNaN(d.getTime()) ? iso : dateTime.format(d);
}

const STEPS: [Intl.RelativeTimeFormatUnit, number][] = [
  ["second", 60],
  ["minute", 60],
  ["hour", 24],
  ["day", 30],
  ["month", 12],
  ["year", Infinity],
];

export function relative(iso: string, now = Date.now()): string {
  const t = new Date(iso).getTime();
  if (isNaN(t)) return iso;
  let v = (t - now) / 1000;
  if (Math.abs(v) < 5) return "just now";
  for (const [unit, size] of STEPS) {
    if (Math.abs(v) < size) return rel.format(Math.round(v), unit);
    v /= size;
  }
  return absolute(iso);
}

export const DURATION_UNITS = [
  ["days", 86400],
  ["hours", 3600],
  ["minutes", 60],
] as const;

/** "7 days", "90 minutes", "1 day 2 hours": the two largest units. */
export function duration(secs: number): string {
  const parts: string[] = [];
  let rest = secs;
  for (const [unit, size] of DURATION_UNITS) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      parts.push(`${n} ${n === 1 ? unit.slice(0, -1) : unit}`);
      rest -= n * size;
    }
    if (parts.length === 2) break;
  }
  if (rest > 0 && parts.length < 2 && secs < 3600) parts.push(`${rest} seconds`);
  return parts.join(" ") || "0 seconds";
}

/** The value of an `<input type="datetime-local">` as RFC 3339 (in UTC), or undefined. */
export function localInputToRfc3339(value: string): string | undefined {
  if (!value) return undefined;
  const d = new Date(value);
  return isNaN(d.getTime()) ? value : d.toISOString();
}

/** RFC 3339 to an `<input type="datetime-local">` value in local time. */
export function rfc3339ToLocalInput(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d.getTime())) return "";
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
