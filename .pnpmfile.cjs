// What `pnpm pack` and `pnpm publish` put in a tarball's package.json (pnpm's beforePacking hook).
module.exports = {
  hooks: {
    beforePacking(manifest) {
      if (manifest.name !== "emulator-cli") return manifest;
      // The CLI ships one bundle (packages/emulator-cli/scripts/bundle.mjs) that inlines all of its dependencies,
      // the unpublished @stack/* workspace packages included; only its optionalDependencies (zstd-napi, native) stay
      // external. Users install nothing else, and none of its build scripts apply to the tarball. The workspace
      // keeps the dependencies, so changesets still releases the CLI when a library it bundles changes.
      const { dependencies, devDependencies, scripts, ...published } = manifest;
      return published;
    },
  },
};
