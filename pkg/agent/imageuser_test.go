package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/containerd/containerd/namespaces"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

// TestImageUserPerImage: the agent resolves an image's user once and
// reuses the answer for later sandboxes of that image; two images whose
// user has the same name but other IDs each get their own.
func TestImageUserPerImage(t *testing.T) {
	h := newHarness(t)
	ctx := namespaces.WithNamespace(context.Background(), h.namespace())
	a := "localhost/fsbtest/user-a:" + randomHex(t)
	b := "localhost/fsbtest/user-b:" + randomHex(t)
	importImage(t, h.cd, ctx, userImage(t, 1234, 2345), a)
	importImage(t, h.cd, ctx, userImage(t, 4321, 5432), b)

	for i, tc := range []struct {
		image, want string
	}{
		{a, "ids=1234:2345"},
		{a, "ids=1234:2345"}, // the answer kept from the first
		{b, "ids=4321:5432"}, // the same user name in another image
		{a, "ids=1234:2345"},
		{b, "ids=4321:5432"},
	} {
		sb := h.create(&fsbv1.SandboxSpec{Image: tc.image, Command: []string{"sh", "-c", `echo "ids=$(id -u):$(id -g)"; exec sleep 300`}})
		if out := h.waitLog(sb, "ids="); !strings.Contains(out, tc.want) {
			t.Errorf("sandbox %d of %s: want %s, got:\n%s", i, tc.image, tc.want, out)
		}
		c, err := h.cd.LoadContainer(ctx, sb.GetContainerId())
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Spec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if u := s.Process.User; fmt.Sprintf("ids=%d:%d", u.UID, u.GID) != tc.want || len(u.AdditionalGids) != 1 || u.AdditionalGids[0] != u.GID {
			t.Errorf("sandbox %d of %s: spec's user %+v, want %s with its gid as the one additional gid", i, tc.image, u, tc.want)
		}
		h.delete(sb.GetSandboxId(), 0)
	}
}

// userImage is the busybox test image whose config runs as user "app",
// uid:gid as its /etc/passwd and /etc/group say.
func userImage(t *testing.T, uid, gid int) v1.Image {
	t.Helper()
	base, err := testimage.Build(testimage.DefaultBusybox)
	if err != nil {
		t.Fatalf("build the test image: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{
		"etc/passwd": fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\napp:x:%d:%d:app:/tmp:/bin/sh\n", uid, gid),
		"etc/group":  fmt.Sprintf("root:x:0:\napp:x:%d:\n", gid),
	} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.User = "app"
	img, err = mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
