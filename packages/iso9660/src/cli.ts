#!/usr/bin/env node
// stack-mkiso: a drop-in for the common genisoimage/mkisofs invocations. As with genisoimage, Joliet and
// Rock Ridge are added only when asked for (-J, -R), so scripts that swap it in get the same kind of image.

import "./jit.js";
import { IsoError } from "./errors.js";
import { fastLstat } from "./fast-lstat.js";
import { treeFromOperands } from "./fromdir.js";
import { writeTree } from "./image.js";
import type { IsoLevel } from "./names.js";
import { resolveOptions } from "./options.js";

const USAGE = `Usage: stack-mkiso -o FILE [-V LABEL] [-J] [-R] [-iso-level 1|2|3] SOURCE...

Writes an ISO 9660 image of SOURCE (a directory's contents go at the image root; a file goes at the root
under its own name). Byte-identical output for the same input when SOURCE_DATE_EPOCH is set.

  -o, -output FILE       image path, or - for standard output
  -V, -volid LABEL       volume label (up to 32 printable ASCII characters)
  -J, -joliet            add Joliet names (what Windows and macOS show)
  -R, -rock, -r          add Rock Ridge (POSIX names, modes, symlinks; what Linux shows)
  -iso-level N           ISO 9660 interchange level, default 3
  -input-charset CS      accepted for compatibility; names are always read as UTF-8
  -quiet                 accepted for compatibility; stack-mkiso prints nothing on success
  -h, -help, --help      this text`;

class UsageError extends Error {}

interface Parsed {
  output: string;
  volumeId?: string;
  joliet: boolean;
  rockRidge: boolean;
  isoLevel: IsoLevel;
  sources: string[];
}

function parseArgs(argv: string[]): Parsed | "help" {
  let output: string | undefined;
  let volumeId: string | undefined;
  let joliet = false;
  let rockRidge = false;
  let isoLevel: IsoLevel = 3;
  const sources: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    switch (arg.startsWith("--") && arg.length > 2 ? arg.slice(1) : arg) {
      case "-o":
      case "-output":
        output = value();
        break;
      case "-V":
      case "-volid":
        volumeId = value();
        break;
      case "-J":
      case "-joliet":
        joliet = true;
        break;
      case "-R":
      case "-r":
      case "-rock":
      case "-rational-rock":
        rockRidge = true;
        break;
      case "-iso-level": {
        const level = Number(value());
        if (level !== 1 && level !== 2 && level !== 3) throw new UsageError("-iso-level must be 1, 2 or 3");
        isoLevel = level;
        break;
      }
      case "-input-charset":
        value();
        break;
      case "-quiet":
        break;
      case "-h":
      case "-help":
        return "help";
      default:
        if (arg.startsWith("-") && arg !== "-") throw new UsageError(`unknown option ${arg}`);
        sources.push(arg);
    }
  }
  if (output === undefined)
    throw new UsageError("give the image path with -o FILE (or -o - for standard output)");
  if (sources.length === 0) throw new UsageError("give at least one source directory or file");
  return { output, joliet, rockRidge, isoLevel, sources, ...(volumeId === undefined ? {} : { volumeId }) };
}

async function main(argv: string[]): Promise<number> {
  let parsed: Parsed | "help";
  try {
    parsed = parseArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`stack-mkiso: ${error.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (parsed === "help") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  try {
    const options = resolveOptions({
      joliet: parsed.joliet,
      rockRidge: parsed.rockRidge,
      isoLevel: parsed.isoLevel,
      ...(parsed.volumeId === undefined ? {} : { volumeId: parsed.volumeId }),
    });
    const lstat = fastLstat(parsed.sources[0]!);
    const tree = treeFromOperands(parsed.sources, {
      date: options.date,
      clampMtime: options.fixedDate,
      ...(lstat === undefined ? {} : { lstat }),
    });
    await writeTree(tree, parsed.output === "-" ? process.stdout : parsed.output, options);
    return 0;
  } catch (error) {
    if (!(error instanceof IsoError)) throw error;
    process.stderr.write(`stack-mkiso: ${error.message} [${error.code}]\n`);
    return 1;
  }
}

// No top-level await: the bin is bundled as CommonJS (scripts/bundle-bin.mjs).
void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
