// Package image builds mcpid's container images without a container engine:
// a minimal root filesystem (the CA bundle, passwd and group entries for one
// numeric non-root user, a writable /tmp) and one static binary on top,
// written as an OCI image layout in a tar file — what `docker buildx
// --output type=oci` writes and what `skopeo`, `crane` and registries
// accept. Verify unpacks such a tarball and starts its binary in it.
package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// CABundlePath is where the image carries its CA bundle: the first path Go's
// crypto/x509 looks at on Linux, and Debian's.
const CABundlePath = "/etc/ssl/certs/ca-certificates.crt"

// DefaultUID is the image user: 65532 is distroless's "nonroot", so the
// Dockerfiles (distroless base) and these images run as the same user and
// volume permissions carry over.
const DefaultUID = 65532

// Spec describes one image.
type Spec struct {
	// Name is the service ("token"); the binary is /usr/local/bin/mcpid-<name>.
	Name string
	// Binary is the static binary's contents.
	Binary []byte
	// CABundle is the PEM CA bundle (Debian's ca-certificates).
	CABundle []byte
	// UID is the numeric user and group the image runs as; never 0.
	UID int
	// Ports are the exposed TCP ports.
	Ports []int
	// Env are extra environment variables (KEY=value), e.g. the listen
	// addresses: a service's defaults are loopback, useless in a container.
	Env []string
	// Version labels the image (org.opencontainers.image.version).
	Version string
	// Created is the image and file time; fixed so builds are reproducible.
	Created time.Time
}

// BinaryPath is where the service binary lives in the image.
func (s Spec) BinaryPath() string { return "/usr/local/bin/mcpid-" + s.Name }

func (s Spec) validate() error {
	switch {
	case s.Name == "":
		return errors.New("image: name is empty")
	case len(s.Binary) == 0:
		return errors.New("image: binary is empty")
	case len(s.CABundle) == 0:
		return errors.New("image: CA bundle is empty")
	case s.UID <= 0:
		return fmt.Errorf("image: uid %d: the image must run as a non-root numeric user", s.UID)
	}
	return nil
}

// Build assembles the image: a base layer (CA bundle, users, /tmp) shared
// by every service image, and the binary's layer.
func Build(s Spec) (v1.Image, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	base, err := baseLayer(s)
	if err != nil {
		return nil, err
	}
	bin, err := tarLayer(s.Created, []entry{
		{name: "usr/", dir: true, mode: 0o755},
		{name: "usr/local/", dir: true, mode: 0o755},
		{name: "usr/local/bin/", dir: true, mode: 0o755},
		{name: s.BinaryPath()[1:], mode: 0o755, data: s.Binary},
	})
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, base, bin)
	if err != nil {
		return nil, fmt.Errorf("image: layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	if a := os.Getenv("GOARCH"); a != "" {
		cf.Architecture = a
	}
	cf.Created = v1.Time{Time: s.Created}
	uid := strconv.Itoa(s.UID)
	cf.Config.User = uid + ":" + uid
	cf.Config.Entrypoint = []string{s.BinaryPath()}
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{
		"PATH=/usr/local/bin",
		"SSL_CERT_FILE=" + CABundlePath,
		"HOME=/home/mcpid",
	}
	cf.Config.Env = append(cf.Config.Env, s.Env...)
	cf.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range s.Ports {
		cf.Config.ExposedPorts[strconv.Itoa(p)+"/tcp"] = struct{}{}
	}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   "mcpid-" + s.Name,
		"org.opencontainers.image.source":  "https://github.com/mcpid/mcpid",
		"org.opencontainers.image.version": s.Version,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return mutate.CreatedAt(img, v1.Time{Time: s.Created})
}

func baseLayer(s Spec) (v1.Layer, error) {
	uid := strconv.Itoa(s.UID)
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		"mcpid:x:" + uid + ":" + uid + ":mcpid:/home/mcpid:/sbin/nologin\n"
	group := "root:x:0:\nmcpid:x:" + uid + ":\n"
	return tarLayer(s.Created, []entry{
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/ssl/", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/", dir: true, mode: 0o755},
		{name: CABundlePath[1:], mode: 0o644, data: s.CABundle},
		{name: "home/", dir: true, mode: 0o755},
		{name: "home/mcpid/", dir: true, mode: 0o700, uid: s.UID},
		{name: "tmp/", dir: true, mode: 0o1777},
	})
}

type entry struct {
	name string
	dir  bool
	mode int64
	uid  int
	data []byte
}

func tarLayer(created time.Time, entries []entry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: created, Uid: e.uid, Gid: e.uid, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image: tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: tar: %w", err)
	}
	return gzipLayer(buf.Bytes())
}

// gzipLayer turns an uncompressed layer tar into an OCI gzip layer (digest
// of the compressed blob, diff ID of the tar).
func gzipLayer(raw []byte) (v1.Layer, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return l, nil
}

// WriteOCITar writes img, tagged ref (e.g. "mcpid-token:dev"), as an OCI
// image layout packed in a tar file at dst.
func WriteOCITar(dst, ref string, img v1.Image) error {
	dir, err := os.MkdirTemp("", "oci-layout-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          ref,
	})); err != nil {
		return fmt.Errorf("image: layout: %w", err)
	}
	return tarDir(dir, dst)
}

func tarDir(src, dst string) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("image: %w", cerr)
		}
	}()
	tw := tar.NewWriter(f)
	werr := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = time.Unix(0, 0), 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		r, err := os.Open(p)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(tw, r)
		return err
	})
	if werr != nil {
		return fmt.Errorf("image: pack %s: %w", dst, werr)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image: pack %s: %w", dst, err)
	}
	return nil
}

// ReadOCITar loads the single image of an OCI layout tar written by
// WriteOCITar, unpacking it into scratch (a folder the caller removes).
func ReadOCITar(src, scratch string) (v1.Image, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	if err := untar(tar.NewReader(f), scratch, false); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(scratch)
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", src, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image: %s: %w", src, err)
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("image: %s holds %d images, want 1", src, len(m.Manifests))
	}
	return idx.Image(m.Manifests[0].Digest)
}

// untar extracts r below root, refusing names that escape it; with owners
// it applies the entries' uid and gid (a root filesystem needs them).
func untar(tr *tar.Reader, root string, owners bool) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("image: untar: %w", err)
		}
		clean := path.Clean("/" + h.Name)
		if clean == "/" {
			continue
		}
		target := filepath.Join(root, filepath.FromSlash(clean))
		mode := os.FileMode(h.Mode).Perm() | modeBits(h.Mode)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("image: untar: %w", err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("image: untar: %w", err)
			}
			w, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("image: untar: %w", err)
			}
			_, cerr := io.Copy(w, io.LimitReader(tr, h.Size))
			if err := errors.Join(cerr, w.Close()); err != nil {
				return fmt.Errorf("image: untar %s: %w", h.Name, err)
			}
		default:
			return fmt.Errorf("image: untar %s: unsupported entry type %q", h.Name, h.Typeflag)
		}
		if err := os.Chmod(target, mode); err != nil {
			return fmt.Errorf("image: untar: %w", err)
		}
		if owners {
			if err := os.Lchown(target, h.Uid, h.Gid); err != nil {
				return fmt.Errorf("image: untar: %w", err)
			}
		}
	}
}

func modeBits(m int64) os.FileMode {
	var b os.FileMode
	if m&0o1000 != 0 {
		b |= os.ModeSticky
	}
	if m&0o2000 != 0 {
		b |= os.ModeSetgid
	}
	if m&0o4000 != 0 {
		b |= os.ModeSetuid
	}
	return b
}
