import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach } from "vitest";

const created: string[] = [];

afterEach(async () => {
  await Promise.all(created.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

/** A fresh directory standing in for `/`, readable by other users so `nobody` can look inside it too. */
export async function tempRoot(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "host-detect-test-"));
  await chmod(dir, 0o755);
  created.push(dir);
  return dir;
}

export async function put(
  root: string,
  file: string,
  content: string | Buffer,
  mode = 0o644,
): Promise<string> {
  const full = path.join(root, file);
  await mkdir(path.dirname(full), { recursive: true, mode: 0o755 });
  await writeFile(full, content);
  await chmod(full, mode);
  return full;
}

/** A shell script posing as QEMU; `$1` is its first argument. */
export function script(body: string): string {
  return `#!/bin/sh\n${body}\n`;
}

export const REAL_QEMU = "/usr/bin/qemu-system-x86_64";

/**
 * How a wrapped QEMU fails under `-accel kvm`, the ways broken hosts were seen to fail: `abort` exits at start with
 * QEMU's own message (a host whose kvm rejects an MSR), `silent` never runs the guest and never prints anything (a
 * paravirtualized kvm that hangs a kernel). `-on-boot` fails only the emulator's real boots (those with -kernel), so
 * the accelerator's proof passes and the boot itself must catch it.
 */
export type KvmFailure = "abort" | "silent" | "abort-on-boot" | "silent-on-boot";

const KVM_ABORT_MESSAGE = [
  "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69",
  "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3094: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.",
].join("\n");

/**
 * A qemu-system-x86_64 that is the real one, except under `-accel kvm`: there it fails as `failure` says, and where
 * it does not fail it runs the guest under tcg instead (this machine's own kvm is never used).
 */
export async function brokenKvmQemu(failure: KvmFailure): Promise<string> {
  const root = await tempRoot();
  const onBootOnly = failure.endsWith("-on-boot");
  const how = failure.replace("-on-boot", "");
  return put(
    root,
    "bin/qemu-system-x86_64",
    script(`real=${REAL_QEMU}
case " $* " in *" -accel kvm "*) ;; *) exec "$real" "$@" ;; esac
fail=yes
${onBootOnly ? 'case " $* " in *" -kernel "*) ;; *) fail=no ;; esac' : ""}
prev=
for arg; do
  shift
  [ "$prev" = -accel ] && [ "$arg" = kvm ] && arg=tcg
  set -- "$@" "$arg"
  prev=$arg
done
[ "$fail" = no ] && exec "$real" "$@"
${
  how === "abort"
    ? `cat >&2 <<'MSG'\n${KVM_ABORT_MESSAGE}\nMSG\nexit 1`
    : '# Paused before the first instruction: the guest never runs and never prints.\nexec "$real" "$@" -S'
}`),
    0o755,
  );
}
