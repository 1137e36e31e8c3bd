import type { Command } from "commander";
import { chooseImage, pullChoice, resolveImage } from "../../image/choose.js";
import { describeSelector, writeCurrentImage } from "../../image/image-store.js";
import { type Io, invocation, output } from "../io.js";
import { imageOptions } from "../options.js";
import type { SettingsFlags } from "../settings.js";

export function registerImages(program: Command, io: Io): void {
  imageOptions(
    program
      .command("pull")
      .description("download an image (verified, resumable) and capture its snapshot")
      .option("--skip-snapshot", "download only; the first start cold boots and captures"),
  ).action(async (flags: SettingsFlags, command: Command) => {
    const { settings, json, instance } = invocation(io, command, flags);
    const choice = chooseImage(settings);
    const { selector } = choice;
    const { image, download } =
      selector.kind === "dev" || selector.kind === "path"
        ? await resolveImage(instance.ctx, choice, true)
        : await pullChoice(instance.ctx, choice);
    writeCurrentImage(settings.layout, selector, image.manifest.arch);
    const captured = !settings.noSnapshot;
    if (captured) await instance.capture(image, selector);
    output(
      io,
      json,
      {
        image: describeSelector(selector),
        dir: image.dir,
        digest: image.manifest.digest,
        captured,
        ...(download ? { download } : {}),
      },
      () => `image ${image.manifest.name} ready at ${image.dir}${captured ? " (snapshot captured)" : ""}`,
    );
  });

  imageOptions(
    program.command("capture").description("capture the image's snapshot now (the emulator must be stopped)"),
  ).action(async (flags: SettingsFlags, command: Command) => {
    const { settings, json, instance } = invocation(io, command, flags);
    const choice = chooseImage(settings);
    const { image } = await resolveImage(instance.ctx, choice);
    const result = await instance.capture(image, choice.selector);
    output(io, json, result, () => `snapshot captured (${result.method}) in ${result.snapshotDir}`);
  });

  program
    .command("list-releases")
    .description("list emulator releases on GitHub")
    .option("--repo <owner/name>", "GitHub repository")
    .action(async (flags: { repo?: string }, command: Command) => {
      const { json, instance } = invocation(io, command, flags);
      const { listReleases } = await import("../../image/pull.js");
      const releases = await listReleases(instance.ctx);
      output(io, json, releases, () =>
        releases.length === 0
          ? "no emulator releases found"
          : releases
              .map(
                (r) =>
                  `${r.tag.padEnd(36)} ${r.date.slice(0, 10)}  ${r.size.padStart(9)}  ${r.flags.join(",")}`,
              )
              .join("\n"),
      );
    });
}
