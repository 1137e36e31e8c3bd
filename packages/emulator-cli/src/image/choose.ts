import type { Context } from "../core/context.js";
import type { Settings } from "../core/settings.js";
import type { DownloadReport } from "./download-report.js";
import { type Image, loadImage, withMachineSettings } from "./image.js";
import {
  archOf,
  ensureDevImage,
  type ImageSelector,
  type PullFlags,
  parseImageSelector,
  readCurrentImage,
  selectorFromFlags,
  storedImage,
} from "./image-store.js";

/** An image to use, and the flags to find it with. */
export interface ImageChoice {
  selector: ImageSelector;
  flags: PullFlags;
}

/**
 * The image a command uses: `--image` (or STACK_EMULATOR_IMAGE), else the pull flags (`--tag`, `--pr`, ...), else the
 * last image (with its architecture unless `--arch` says otherwise), else the default release.
 */
export function chooseImage(settings: Settings): ImageChoice {
  const flags: PullFlags = settings.pull;
  if (settings.image) return { selector: parseImageSelector(settings.image), flags };
  const fromFlags = selectorFromFlags(flags);
  if (fromFlags) return { selector: fromFlags, flags };
  const current = readCurrentImage(settings.layout);
  if (current) {
    const arch = flags.arch ?? current.arch;
    return { selector: parseImageSelector(current.selector), flags: { ...flags, ...(arch ? { arch } : {}) } };
  }
  return { selector: { kind: "release" }, flags };
}

/** An image to use, and what was downloaded for it when this command pulled it. */
export interface ResolvedImage {
  image: Image;
  download?: DownloadReport;
}

/** Downloads the image a selector names; the download code (the HTTP client and friends) is loaded only when needed. */
export async function pullChoice(ctx: Context, choice: ImageChoice): Promise<Required<ResolvedImage>> {
  const { pullImage } = await import("./pull.js");
  const { image, download } = await pullImage(ctx, choice.selector, choice.flags);
  return { image: withMachineSettings(image, ctx.settings.machine), download };
}

/**
 * The image a choice names, found, built (the dev image) or downloaded, with the guest's RAM and vCPUs as the settings
 * say. `rebuild`: build the dev image even when it looks current.
 */
export async function resolveImage(
  ctx: Context,
  choice: ImageChoice,
  rebuild = false,
): Promise<ResolvedImage> {
  const { selector, flags } = choice;
  switch (selector.kind) {
    case "dev": {
      const image = await ensureDevImage(ctx.settings, {
        arch: archOf(flags),
        rebuild,
        onBuild: () => ctx.report.step("building the dev image from Debian packages (cached by content)"),
      });
      return { image: withMachineSettings(image, ctx.settings.machine) };
    }
    case "path":
      return { image: withMachineSettings(loadImage(selector.path), ctx.settings.machine) };
    default: {
      const stored = storedImage(ctx.layout, selector, flags);
      return stored ? { image: withMachineSettings(stored, ctx.settings.machine) } : pullChoice(ctx, choice);
    }
  }
}
