// Shared building blocks: data loading, forms that show API errors next to their fields,
// dialogs, empty states, badges, copyable code and notices.
import type { ComponentChildren, JSX, RefObject } from "preact";
import { useCallback, useEffect, useId, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";
import { absolute, relative } from "./format";

// ---- Loading data ----

export interface Loaded<T> {
  data?: T;
  error?: ApiError;
  loading: boolean;
  reload(): void;
}

/** Runs `load` when `deps` change, and every `pollMs` while the page is visible. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], pollMs = 0): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: ApiError; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const lastDeps = useRef<unknown[] | null>(null);
  useEffect(() => {
    let live = true;
    // New inputs (another filter, another page) must not show the previous answer meanwhile;
    // a reload of the same inputs keeps it on screen.
    const same = lastDeps.current !== null && lastDeps.current.every((d, i) => Object.is(d, deps[i]));
    lastDeps.current = deps;
    setState((s) => (same ? { ...s, loading: true } : { loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error) => live && setState((s) => ({ data: s.data, error: asApiError(error), loading: false })),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  useEffect(() => {
    if (!pollMs) return;
    const id = window.setInterval(() => {
      if (document.visibilityState === "visible") {
        load().then(
          (data) => setState({ data, loading: false }),
          () => {},
        );
      }
    }, pollMs);
    return () => window.clearInterval(id);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, pollMs]);
  return { ...state, reload };
}

export function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  return new ApiError(0, { code: "client", message: e instanceof Error ? e.message : String(e) });
}

/** An action started by the user: busy while running, its error kept for the form. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | undefined>();
  const run = useCallback(async <T,>(fn: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(undefined);
    try {
      return await fn();
    } catch (e) {
      setError(asApiError(e));
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run, clear: () => setError(undefined) };
}

// ---- Forms ----

interface FormProps {
  onSubmit: (data: FormData, form: HTMLFormElement) => void;
  error?: ApiError;
  /** Field names shown in this form; other errors appear above the buttons. */
  fields: string[];
  children: ComponentChildren;
  class?: string;
  label?: string;
}

export function Form({ onSubmit, error, fields, children, class: cls, label }: FormProps) {
  const ref = useRef<HTMLFormElement>(null);
  useEffect(() => {
    const f = error?.field;
    if (!f || !ref.current || !fields.includes(f)) return;
    const el = ref.current.querySelector<HTMLElement>(`[name="${CSS.escape(f)}"]`);
    el?.focus();
  }, [error]);
  return (
    <form
      ref={ref}
      class={cls ?? "form"}
      aria-label={label}
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        onSubmit(new FormData(e.currentTarget), e.currentTarget);
      }}
    >
      {children}
      {error && !(error.field && fields.includes(error.field)) && <Alert error={error} />}
    </form>
  );
}

export function fieldError(error: ApiError | undefined, name: string): string | undefined {
  return error && error.field === name ? error.fieldMessage : undefined;
}

interface FieldProps {
  label: string;
  name: string;
  error?: ApiError;
  /** A client-side message, shown like the server's. */
  message?: string;
  hint?: ComponentChildren;
  children: (attrs: FieldAttrs) => JSX.Element;
}

export interface FieldAttrs {
  id: string;
  name: string;
  "aria-invalid"?: "true";
  "aria-describedby"?: string;
}

export function Field({ label, name, error, message, hint, children }: FieldProps) {
  const id = useId();
  const msg = message ?? fieldError(error, name);
  const described = [hint ? `${id}-hint` : "", msg ? `${id}-err` : ""].filter(Boolean).join(" ");
  return (
    <div class={msg ? "field invalid" : "field"}>
      <label for={id}>{label}</label>
      {children({
        id,
        name,
        "aria-invalid": msg ? "true" : undefined,
        "aria-describedby": described || undefined,
      })}
      {hint && (
        <div class="hint" id={`${id}-hint`}>
          {hint}
        </div>
      )}
      {msg && (
        <div class="field-error" id={`${id}-err`} role="alert">
          {msg}
        </div>
      )}
    </div>
  );
}

export function Alert({ error, onRetry }: { error: ApiError; onRetry?: () => void }) {
  return (
    <div class="alert error" role="alert">
      <div>
        <strong>{titleFor(error)}</strong> {error.message}
        {error.requestId && <div class="muted small">Request id {error.requestId}</div>}
      </div>
      {onRetry && (
        <button type="button" class="btn small" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

function titleFor(e: ApiError): string {
  switch (e.status) {
    case 0:
      return "Not sent.";
    case 403:
      return "Not allowed.";
    case 404:
      return "Not found.";
    case 409:
      return "Conflict.";
    case 429:
      return "Slow down.";
    default:
      return e.status >= 500 ? "Server error." : "Could not do that.";
  }
}

interface ButtonProps extends JSX.ButtonHTMLAttributes<HTMLButtonElement> {
  busy?: boolean;
  variant?: "primary" | "danger" | "plain" | "ghost";
  small?: boolean;
}

export function Button({ busy, variant = "plain", small, children, disabled, type, ...rest }: ButtonProps) {
  const cls = ["btn", variant !== "plain" ? variant : "", small ? "small" : ""].filter(Boolean).join(" ");
  return (
    <button
      type={type ?? "button"}
      class={cls}
      disabled={busy || disabled}
      aria-busy={busy ? "true" : undefined}
      {...rest}
    >
      {busy && <Spinner />}
      {children}
    </button>
  );
}

// ---- Page furniture ----

export function PageHeader({
  title,
  subtitle,
  actions,
  back,
}: {
  title: ComponentChildren;
  subtitle?: ComponentChildren;
  actions?: ComponentChildren;
  back?: ComponentChildren;
}) {
  return (
    <header class="page-header">
      <div>
        {back && <div class="crumbs">{back}</div>}
        <h1>{title}</h1>
        {subtitle && <p class="muted">{subtitle}</p>}
      </div>
      {actions && <div class="actions">{actions}</div>}
    </header>
  );
}

export function Spinner() {
  return <span class="spinner" aria-hidden="true" />;
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div class="loading" role="status">
      <Spinner /> {what}…
    </div>
  );
}

export function Empty({
  title,
  children,
  action,
}: {
  title: string;
  children?: ComponentChildren;
  action?: ComponentChildren;
}) {
  return (
    <div class="empty">
      <h2>{title}</h2>
      {children && <p class="muted">{children}</p>}
      {action && <div class="empty-action">{action}</div>}
    </div>
  );
}

/** Renders loading, error and data states of a [`useLoad`] result the same way everywhere. */
export function Loader<T>({
  state,
  what,
  children,
}: {
  state: Loaded<T>;
  what?: string;
  children: (data: T) => ComponentChildren;
}) {
  if (state.data !== undefined) {
    return (
      <>
        {state.error && <Alert error={state.error} onRetry={state.reload} />}
        {children(state.data)}
      </>
    );
  }
  if (state.error) return <Alert error={state.error} onRetry={state.reload} />;
  return <Loading what={what} />;
}

export function Badge({
  tone = "neutral",
  children,
}: {
  tone?: "ok" | "warn" | "bad" | "neutral" | "info";
  children: ComponentChildren;
}) {
  return <span class={`badge ${tone}`}>{children}</span>;
}

export function Time({ value, empty = "—" }: { value: string | null | undefined; empty?: string }) {
  if (!value) return <span class="muted">{empty}</span>;
  return (
    <time dateTime={value} title={absolute(value)}>
      {relative(value)}
    </time>
  );
}

export function Card({
  title,
  actions,
  children,
  class: cls,
}: {
  title?: ComponentChildren;
  actions?: ComponentChildren;
  children: ComponentChildren;
  class?: string;
}) {
  return (
    <section class={cls ? `card ${cls}` : "card"}>
      {(title || actions) && (
        <div class="card-head">
          {title && <h2>{title}</h2>}
          {actions && <div class="actions">{actions}</div>}
        </div>
      )}
      {children}
    </section>
  );
}

export function TableWrap({ children, label }: { children: ComponentChildren; label: string }) {
  const ref = useRef<HTMLTableElement>(null);
  // Narrow screens show each row as a card; every cell carries its column's name for that.
  useLayoutEffect(() => {
    const table = ref.current;
    if (!table) return;
    const names = [...table.querySelectorAll("thead th")].map((th) =>
      th.classList.contains("actions-col") ? "" : (th.textContent?.trim() ?? ""),
    );
    for (const row of table.querySelectorAll("tbody tr")) {
      const cells = row.querySelectorAll(":scope > td");
      if (cells.length !== names.length) continue;
      cells.forEach((td, i) => td.setAttribute("data-label", names[i]));
    }
  });
  return (
    <div class="table-wrap" role="region" aria-label={label} tabIndex={0}>
      <table ref={ref}>{children}</table>
    </div>
  );
}

// ---- Dialogs ----

export function Dialog({
  open,
  title,
  onClose,
  children,
  wide,
}: {
  open: boolean;
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  wide?: boolean;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  const titleId = useId();
  return (
    <dialog
      ref={ref}
      class={wide ? "dialog wide" : "dialog"}
      aria-labelledby={titleId}
      onClose={onClose}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      {open && (
        <>
          <div class="dialog-head">
            <h2 id={titleId}>{title}</h2>
            <button type="button" class="btn ghost icon" aria-label="Close" onClick={onClose}>
              ×
            </button>
          </div>
          <div class="dialog-body">{children}</div>
        </>
      )}
    </dialog>
  );
}

interface ConfirmRequest {
  title: string;
  body: ComponentChildren;
  confirm: string;
  danger?: boolean;
  resolve: (ok: boolean) => void;
}

/** A confirmation dialog: `await ask({...})` resolves true when confirmed. */
export function useConfirm(): [JSX.Element, (r: Omit<ConfirmRequest, "resolve">) => Promise<boolean>] {
  const [req, setReq] = useState<ConfirmRequest | null>(null);
  const ask = useCallback(
    (r: Omit<ConfirmRequest, "resolve">) => new Promise<boolean>((resolve) => setReq({ ...r, resolve })),
    [],
  );
  const done = (ok: boolean) => {
    req?.resolve(ok);
    setReq(null);
  };
  const el = (
    <Dialog open={!!req} title={req?.title ?? ""} onClose={() => done(false)}>
      <div class="confirm-body">{req?.body}</div>
      <div class="form-actions">
        <Button onClick={() => done(false)}>Cancel</Button>
        <Button variant={req?.danger ? "danger" : "primary"} onClick={() => done(true)} autoFocus>
          {req?.confirm}
        </Button>
      </div>
    </Dialog>
  );
  return [el, ask];
}

// ---- Copyable text ----

export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

export function CopyButton({
  text,
  label = "Copy",
  target,
}: {
  text: string;
  label?: string;
  target?: RefObject<HTMLElement>;
}) {
  const [state, setState] = useState<"idle" | "copied" | "select">("idle");
  const click = async () => {
    if (await copyText(text)) {
      setState("copied");
    } else {
      // No clipboard access: select the text so the user can copy it themselves.
      const el = target?.current;
      if (el) {
        const range = document.createRange();
        range.selectNodeContents(el);
        const sel = getSelection();
        sel?.removeAllRanges();
        sel?.addRange(range);
      }
      setState("select");
    }
    window.setTimeout(() => setState("idle"), 2000);
  };
  return (
    <Button small onClick={click} aria-live="polite">
      {state === "copied" ? "Copied" : state === "select" ? "Press Ctrl+C" : label}
    </Button>
  );
}

export function Code({
  text,
  label,
  block,
  copy = true,
}: {
  text: string;
  label: string;
  block?: boolean;
  copy?: boolean;
}) {
  const ref = useRef<HTMLElement>(null);
  return (
    <div class={block ? "code block" : "code"}>
      {block ? (
        <pre ref={ref as RefObject<HTMLPreElement>} tabIndex={0} aria-label={label}>
          {text}
        </pre>
      ) : (
        <code ref={ref} aria-label={label}>
          {text}
        </code>
      )}
      {copy && <CopyButton text={text} target={ref} />}
    </div>
  );
}

/** Offers `text` as a file download (built in the page, so no second request). */
export function DownloadText({
  text,
  filename,
  label,
  type = "application/yaml",
}: {
  text: string;
  filename: string;
  label: string;
  type?: string;
}) {
  const [href, setHref] = useState<string>("");
  useEffect(() => {
    const url = URL.createObjectURL(new Blob([text], { type }));
    setHref(url);
    return () => URL.revokeObjectURL(url);
  }, [text, type]);
  return (
    <a class="btn small" href={href} download={filename}>
      {label}
    </a>
  );
}

// ---- Notices ----

/** Runs an action started from a button; a notice says how it went. True when it worked. */
export async function attempt(fn: () => Promise<unknown>, done: string): Promise<boolean> {
  try {
    await fn();
    notify(done);
    return true;
  } catch (e) {
    notify(asApiError(e).message, "bad");
    return false;
  }
}

interface Notice {
  id: number;
  text: string;
  tone: "ok" | "bad";
}
let notices: Notice[] = [];
let nextNotice = 1;
const noticeListeners = new Set<() => void>();

export function notify(text: string, tone: "ok" | "bad" = "ok"): void {
  const n = { id: nextNotice++, text, tone };
  notices = [...notices, n].slice(-4);
  noticeListeners.forEach((l) => l());
  window.setTimeout(() => {
    notices = notices.filter((x) => x.id !== n.id);
    noticeListeners.forEach((l) => l());
  }, 4000);
}

export function Notices() {
  const [, set] = useState(0);
  useEffect(() => {
    const l = () => set((x) => x + 1);
    noticeListeners.add(l);
    return () => noticeListeners.delete(l);
  }, []);
  return (
    <div class="notices" role="status" aria-live="polite">
      {notices.map((n) => (
        <div key={n.id} class={`notice ${n.tone}`}>
          {n.text}
        </div>
      ))}
    </div>
  );
}
