package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Report is what a binary started with --selfcheck prints
// (lib/service.SelfCheck).
type Report struct {
	Service     string `json:"service"`
	UID         int    `json:"uid"`
	GID         int    `json:"gid"`
	SystemRoots int    `json:"system_roots"`
}

// Verify unpacks the image in the OCI tar at src into a scratch folder
// below workDir, starts its entrypoint with --selfcheck chrooted into the
// image's root filesystem as the image's configured numeric user, and checks
// the report: the process runs as that user (not root) and finds CA
// certificates. It needs root (chroot) — the build machines and CI run as
// root in their own user namespace.
func Verify(ctx context.Context, src, workDir string) (Report, error) {
	var r Report
	scratch, err := os.MkdirTemp(workDir, "verify-")
	if err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	defer os.RemoveAll(scratch)
	layoutDir, rootfs := scratch+"/layout", scratch+"/rootfs"
	if err := os.MkdirAll(layoutDir, 0o755); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	img, err := ReadOCITar(src, layoutDir)
	if err != nil {
		return r, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return r, fmt.Errorf("verify: config: %w", err)
	}
	uid, gid, err := numericUser(cf.Config.User)
	if err != nil {
		return r, err
	}
	if uid == 0 {
		return r, errors.New("verify: the image runs as root")
	}
	if len(cf.Config.Entrypoint) == 0 {
		return r, errors.New("verify: the image has no entrypoint")
	}
	fs := mutate.Extract(img)
	defer fs.Close()
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	if err := untar(tar.NewReader(fs), rootfs, true); err != nil {
		return r, err
	}
	args := append(append([]string(nil), cf.Config.Entrypoint[1:]...), "--selfcheck")
	cmd := exec.CommandContext(ctx, cf.Config.Entrypoint[0], args...)
	// The child chroots before execve, so the entrypoint's path is resolved
	// inside the image (an absolute path is not looked up on the host).
	cmd.Dir = "/"
	cmd.Env = cf.Config.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     rootfs,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, //nolint:gosec // parsed as non-negative 32-bit numbers
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return r, fmt.Errorf("verify: %s --selfcheck printed %q (stderr %q): %w",
			cf.Config.Entrypoint[0], stdout.String(), stderr.String(), errors.Join(err, runErr))
	}
	if runErr != nil {
		return r, fmt.Errorf("verify: selfcheck failed: %w: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	if r.UID != uid || r.GID != gid {
		return r, fmt.Errorf("verify: ran as %d:%d, image says %d:%d", r.UID, r.GID, uid, gid)
	}
	if r.SystemRoots == 0 {
		return r, errors.New("verify: the binary found no CA certificates in the image")
	}
	return r, nil
}

// numericUser parses "uid:gid" (or "uid"): Kubernetes' runAsNonRoot can
// only check a numeric user.
func numericUser(s string) (uid, gid int, err error) {
	u, g, hasGroup := strings.Cut(s, ":")
	uid, err = strconv.Atoi(u)
	if err != nil || uid < 0 || uid > 1<<31 {
		return 0, 0, fmt.Errorf("verify: image user %q is not a numeric uid", s)
	}
	gid = uid
	if hasGroup {
		gid, err = strconv.Atoi(g)
		if err != nil || gid < 0 || gid > 1<<31 {
			return 0, 0, fmt.Errorf("verify: image group %q is not a numeric gid", s)
		}
	}
	return uid, gid, nil
}
