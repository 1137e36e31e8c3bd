// No Docker daemon here: check what can go stale between the Dockerfile and the files it ships.
import { access, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dockerDir } from "./harness.js";

const dockerfile = () => readFile(join(dockerDir, "Dockerfile"), "utf8");

describe("docker/Dockerfile", () => {
  it("sets every variable supervisord.conf expands", async () => {
    const conf = await readFile(join(dockerDir, "supervisord.conf"), "utf8");
    const needed = new Set([...conf.matchAll(/%\(ENV_([A-Z0-9_]+)\)s/g)].map((m) => m[1]));
    expect(needed.size).toBeGreaterThan(5);
    const text = await dockerfile();
    for (const name of needed) expect(text, name).toMatch(new RegExp(`\\b${name}=`));
  });

  it("copies files that exist, to the paths the scripts and the config use", async () => {
    const text = await dockerfile();
    const copies = [...text.matchAll(/^COPY (?:--\S+ )*(\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!] as const);
    expect(copies.length).toBe(5);
    for (const [src] of copies) await access(join(dockerDir, src));
    const dest = new Map(copies);
    expect(dest.get("lib/secret-input.sh")).toBe("/usr/local/lib/stack-emulator/secret-input.sh");
    expect(dest.get("rotate-secrets")).toBe("/usr/local/bin/rotate-secrets");
    // The defaults baked into the scripts match where the image puts things.
    const rotate = await readFile(join(dockerDir, "rotate-secrets"), "utf8");
    expect(rotate).toContain(`STACK_SUPERVISOR_CONFIG:-${dest.get("supervisord.conf")}`);
    expect(rotate).toContain("STACK_EMULATOR_LIB:-/usr/local/lib/stack-emulator}");
    expect(text).toContain(`ENTRYPOINT ["${dest.get("entrypoint.sh")}"]`);
    // entrypoint (secrets) -> prepare-app -> supervisord with the shipped config.
    expect(text).toContain(
      `CMD ["${dest.get("prepare-app")}", "supervisord", "-c", "${dest.get("supervisord.conf")}"]`,
    );
  });
});
