import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  ACCEL_ENV,
  type Accelerator,
  type AcceleratorChoice,
  type ChooseAcceleratorOptions,
  chooseAccelerator,
} from "./accel.js";
import { HostDetectError } from "./errors.js";
import type { GuestArch } from "./host.js";
import { runWithDeadline } from "./proc.js";

/**
 * Whether an accelerator really runs guest code on this host. A /dev/kvm that exists and opens can still be
 * unusable: on some hosts QEMU aborts as the vCPU is set up ("failed to set MSR 0x10a"), on others the guest never
 * runs. Only running guest code under it, with the machine and CPU model the emulator uses, proves it works.
 */
export interface AcceleratorProof {
  accel: Accelerator;
  arch: GuestArch;
  works: boolean;
  /** What was seen: the proof's success, or QEMU's own message, exit status or the missed deadline. */
  reason: string;
  ms: number;
}

export interface ProveOptions {
  /** The qemu-system binary the emulator will run. */
  qemu: string;
  accel: Accelerator;
  arch: GuestArch;
  /** Default 10 s: a working accelerator answers in well under a second, QEMU's start-up included. */
  timeoutMs?: number;
  /** The machine and CPU model, as the emulator passes them; default q35 (amd64) or virt (arm64), and max. */
  machine?: string;
  cpu?: string;
}

export const DEFAULT_PROOF_TIMEOUT_MS = 10_000;

/** isa-debug-exit turns the byte written to its port into QEMU's exit status: (value << 1) | 1. */
const X86_PROOF_VALUE = 0x2a;
const X86_PROOF_STATUS = (X86_PROOF_VALUE << 1) | 1;
const X86_ROM_SIZE = 0x10000; // QEMU loads an x86 -bios only in multiples of 64 KiB.
const X86_CODE_OFFSET = 0xff00;
const X86_RESET_VECTOR_OFFSET = 0xfff0;

/**
 * A 64 KiB x86 firmware image. The CPU starts in real mode at the reset vector (16 bytes below 4 GiB), which jumps
 * back to code that writes the proof value to isa-debug-exit (port 0x501), then halts. Every other byte is `hlt`.
 */
function x86ProofRom(): Buffer {
  const rom = Buffer.alloc(X86_ROM_SIZE, 0xf4);
  Buffer.from([
    0xb0,
    X86_PROOF_VALUE, // mov al, 0x2a
    0xba,
    0x01,
    0x05, //      mov dx, 0x501
    0xee, //                  out dx, al
    0xf4, //                  hlt
    0xeb,
    0xfd, //            jmp back to hlt
  ]).copy(rom, X86_CODE_OFFSET);
  rom[X86_RESET_VECTOR_OFFSET] = 0xe9; // jmp near rel16, relative to the next instruction
  rom.writeInt16LE(X86_CODE_OFFSET - (X86_RESET_VECTOR_OFFSET + 3), X86_RESET_VECTOR_OFFSET + 1);
  return rom;
}

const ARM64_MARKER = "OK";

/**
 * AArch64 code for `virt`'s flash at address 0: writes the marker to the PL011 UART at 0x09000000, then asks the
 * PSCI firmware (through hvc, the conduit QEMU gives `virt` without EL2) for SYSTEM_OFF, which ends QEMU with 0.
 */
function arm64ProofRom(): Buffer {
  const code = [
    0xd2a12001, // movz x1, #0x0900, lsl #16     UART data register
    0x52800000 | (ARM64_MARKER.charCodeAt(0) << 5), // movz w0, #'O'
    0x39000020, // strb w0, [x1]
    0x52800000 | (ARM64_MARKER.charCodeAt(1) << 5), // movz w0, #'K'
    0x39000020, // strb w0, [x1]
    0xd2800100, // movz x0, #0x0008
    0xf2b08000, // movk x0, #0x8400, lsl #16     PSCI SYSTEM_OFF (0x84000008)
    0xd4000002, // hvc #0
    0x14000000, // b .
  ];
  const rom = Buffer.alloc(code.length * 4);
  code.forEach((word, i) => {
    rom.writeUInt32LE(word, i * 4);
  });
  return rom;
}

function lastLines(text: string, count = 3): string {
  return text.trim().split("\n").slice(-count).join(" | ");
}

/**
 * Boots a few bytes of firmware under `accel` and checks that they ran: on amd64 QEMU must exit with the status the
 * code wrote to isa-debug-exit, on arm64 the code's marker must reach the serial port. Never throws for a failing
 * accelerator: that is an answer (`works: false`, with QEMU's own message), not an error.
 */
export async function proveAccelerator(opts: ProveOptions): Promise<AcceleratorProof> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_PROOF_TIMEOUT_MS;
  const amd64 = opts.arch === "amd64";
  const dir = await mkdtemp(path.join(tmpdir(), "accel-proof-"));
  const rom = path.join(dir, "proof.rom");
  const started = Date.now();
  const answer = (works: boolean, reason: string): AcceleratorProof => ({
    accel: opts.accel,
    arch: opts.arch,
    works,
    reason,
    ms: Date.now() - started,
  });
  try {
    await writeFile(rom, amd64 ? x86ProofRom() : arm64ProofRom());
    const args = [
      "-machine",
      opts.machine ?? (amd64 ? "q35" : "virt"),
      "-accel",
      opts.accel,
      "-cpu",
      opts.cpu ?? "max",
      "-m",
      "64",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-bios",
      rom,
      ...(amd64 ? ["-device", "isa-debug-exit"] : ["-serial", "stdio"]),
    ];
    let result: Awaited<ReturnType<typeof runWithDeadline>>;
    try {
      result = await runWithDeadline(opts.qemu, args, timeoutMs);
    } catch (error) {
      const { code, message } = error as HostDetectError;
      return answer(
        false,
        code === "PROBE_TIMEOUT"
          ? `a ${opts.accel} guest ran no code within ${timeoutMs} ms (QEMU started, the guest never reported back)`
          : message,
      );
    }
    const ran = amd64 ? result.code === X86_PROOF_STATUS : result.stdout.includes(ARM64_MARKER);
    if (ran) return answer(true, `a ${opts.accel} guest ran its proof code`);
    const said = lastLines(result.stderr) || lastLines(result.stdout);
    return answer(
      false,
      `QEMU ${result.signal ? `was killed by ${result.signal}` : `exited with status ${result.code}`} before the ${opts.accel} guest ran any code${said ? `: ${said}` : ""}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface ChooseProvenOptions extends ChooseAcceleratorOptions {
  /** The qemu-system binary whose accelerators are proven. */
  qemu: string;
  guestArch: GuestArch;
  /** Answers from earlier proofs on this host (same kernel, QEMU binary and version), to skip running them again. */
  known?: AcceleratorProof[];
  machine?: string;
  cpu?: string;
  timeoutMs?: number;
}

export interface ProvenChoice extends AcceleratorChoice {
  /** The proofs this call ran (not the known ones it reused): for the caller to remember. */
  proofs: AcceleratorProof[];
  /** The proof behind a hardware accelerator that was chosen or rejected by proof. */
  proof?: AcceleratorProof;
}

/**
 * chooseAccelerator, then proof: a hardware accelerator is only chosen once a guest has run under it. One that
 * fails its proof is rejected with QEMU's reason and the choice falls to the next (tcg). An explicit EMULATOR_ACCEL
 * is proven afresh (it is how a user retries) and is never replaced: if it fails, that is ACCEL_UNUSABLE.
 */
export async function chooseProvenAccelerator(opts: ChooseProvenOptions): Promise<ProvenChoice> {
  const proofs: AcceleratorProof[] = [];
  const exclude = [...(opts.exclude ?? [])];
  let failed: AcceleratorProof | undefined;
  for (;;) {
    const choice = chooseAccelerator({ ...opts, exclude });
    if (choice.accel === "tcg") return { ...choice, proofs, ...(failed ? { proof: failed } : {}) };
    const remembered = opts.known?.find((p) => p.accel === choice.accel && p.arch === opts.guestArch);
    const reuse = remembered && (remembered.works || !choice.overridden) ? remembered : undefined;
    const proof =
      reuse ??
      (await proveAccelerator({
        qemu: opts.qemu,
        accel: choice.accel,
        arch: opts.guestArch,
        ...(opts.machine === undefined ? {} : { machine: opts.machine }),
        ...(opts.cpu === undefined ? {} : { cpu: opts.cpu }),
        ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      }));
    if (!reuse) proofs.push(proof);
    if (proof.works) return { ...choice, proofs, proof };
    if (choice.overridden) {
      throw new HostDetectError(
        "ACCEL_UNUSABLE",
        `${ACCEL_ENV}=${choice.accel} cannot run a guest on this host: ${proof.reason}. ` +
          `Unset ${ACCEL_ENV} to use the next accelerator that works (tcg), or fix ${choice.accel}.`,
        { path: opts.qemu },
      );
    }
    failed = proof;
    exclude.push({ accel: choice.accel, reason: `it failed its proof run: ${proof.reason}` });
  }
}
