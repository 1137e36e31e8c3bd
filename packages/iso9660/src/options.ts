import { IsoError } from "./errors.js";
import type { LayoutOptions } from "./layout.js";
import type { IsoLevel } from "./names.js";

export interface IsoOptions {
  /** Volume label, up to 32 printable ASCII characters (Joliet keeps the first 16). Default `CDROM`. */
  volumeId?: string;
  /** ISO 9660 interchange level. Default 3, the only level that holds files of 4 GiB or more. */
  isoLevel?: IsoLevel;
  /** Joliet (UCS-2 names up to 64 characters). Default on. */
  joliet?: boolean;
  /** Rock Ridge (POSIX names, modes, symlinks, times, deep trees). Default on. */
  rockRidge?: boolean;
  /** The date written everywhere a date goes. Default: SOURCE_DATE_EPOCH when set, else now. */
  date?: Date;
}

export interface ResolvedOptions extends LayoutOptions {
  /** A fixed date was asked for, so source mtimes later than it are capped. */
  fixedDate: boolean;
}

const MAX_VOLUME_ID = 32;

function resolveDate(date: Date | undefined, env: NodeJS.ProcessEnv): { date: Date; fixed: boolean } {
  if (date !== undefined) {
    if (!(date instanceof Date) || Number.isNaN(date.getTime()))
      throw new IsoError("INVALID_OPTION", "Option `date` must be a valid Date.");
    return { date, fixed: true };
  }
  const epoch = env.SOURCE_DATE_EPOCH;
  if (epoch !== undefined && epoch !== "") {
    if (!/^\d+$/.test(epoch))
      throw new IsoError(
        "INVALID_OPTION",
        `SOURCE_DATE_EPOCH="${epoch}" is not a whole number of seconds since 1970; fix or unset it.`,
      );
    return { date: new Date(Number(epoch) * 1000), fixed: true };
  }
  return { date: new Date(Math.floor(Date.now() / 1000) * 1000), fixed: false };
}

export function resolveOptions(
  options: IsoOptions = {},
  env: NodeJS.ProcessEnv = process.env,
): ResolvedOptions {
  const volumeId = options.volumeId ?? "CDROM";
  if (typeof volumeId !== "string" || volumeId.length === 0 || volumeId.length > MAX_VOLUME_ID)
    throw new IsoError(
      "INVALID_VOLUME_ID",
      `Volume id "${volumeId}" must be 1 to ${MAX_VOLUME_ID} characters; shorten it.`,
    );
  if (!/^[\x20-\x7e]+$/.test(volumeId))
    throw new IsoError(
      "INVALID_VOLUME_ID",
      `Volume id "${volumeId}" may hold only printable ASCII characters; readers show anything else as garbage.`,
    );
  const level = options.isoLevel ?? 3;
  if (level !== 1 && level !== 2 && level !== 3)
    throw new IsoError("INVALID_OPTION", `isoLevel must be 1, 2 or 3, not ${String(level)}.`);
  const { date, fixed } = resolveDate(options.date, env);
  return {
    volumeId,
    level,
    joliet: options.joliet ?? true,
    rockRidge: options.rockRidge ?? true,
    date,
    fixedDate: fixed,
  };
}
