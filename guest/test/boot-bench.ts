/**
 * Boot-time benchmark of the dev image under TCG: QEMU start to the first 200 from /health?db=1, for the image as
 * built (the kernel's ELF image booted through PVH) against the same image with Debian's compressed bzImage
 * (`build-dev-image --bzimage`), interleaved round by round in the same run so host load hits both alike.
 *
 *   pnpm exec tsx --tsconfig guest/test/tsconfig.json guest/test/boot-bench.ts [rounds, default 3]
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { bootDevImage, buildDevImage, configIso } from "./dev-vm.js";

const BOOT_TIMEOUT_MS = 300_000;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function timeBoot(imageDir: string, dir: string, isoPath: string): Promise<number> {
  const started = performance.now();
  const vm = await bootDevImage({ imageDir, dir, isoPath });
  try {
    await vm.waitHealthy(BOOT_TIMEOUT_MS);
    return (performance.now() - started) / 1000;
  } finally {
    await vm.kill();
  }
}

const rounds = Number(process.argv[2] ?? 3);
const root = await mkdtemp(join(tmpdir(), "dev-image-bench-"));
try {
  const variants = {
    "ELF kernel via PVH (as built)": (await buildDevImage(join(root, "elf"))).path,
    "bzImage (--bzimage)": (await buildDevImage(join(root, "bzimage"), ["--bzimage"])).path,
  };
  const isoPath = join(root, "config.iso");
  await writeFile(isoPath, await configIso("81", {}));
  const times = new Map<string, number[]>(Object.keys(variants).map((name) => [name, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const [name, imageDir] of Object.entries(variants)) {
      const dir = await mkdtemp(join(root, "vm-"));
      const seconds = await timeBoot(imageDir, dir, isoPath);
      times.get(name)!.push(seconds);
      console.log(`round ${round} ${name}: ${seconds.toFixed(2)} s (load ${loadavg()[0]!.toFixed(1)})`);
      await rm(dir, { recursive: true, force: true });
    }
  }
  const [elf, bz] = [...times.values()].map(median);
  for (const [name, values] of times) console.log(`${name}: median ${median(values).toFixed(2)} s`);
  console.log(
    `bzImage / ELF: ${(bz! / elf!).toFixed(2)}x (QEMU start to /health?db=1 200, TCG, ${rounds} rounds)`,
  );
} finally {
  await rm(root, { recursive: true, force: true });
}
