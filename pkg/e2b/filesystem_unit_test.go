package e2b

import (
	"testing"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestResolve(t *testing.T) {
	c := &fsCall{user: fsUser{name: "user", home: "/home/user"}}
	for _, tc := range []struct {
		in, want string
		code     connect.Code
	}{
		{"", "/home/user", 0},
		{"~", "/home/user", 0},
		{"~/a/b", "/home/user/a/b", 0},
		{"a/../b", "/home/user/b", 0},
		{"../../etc", "/etc", 0},
		{"/abs//x/", "/abs/x", 0},
		{"~other/x", "", connect.CodeInvalidArgument},
		{"a\x00b", "", connect.CodeInvalidArgument},
	} {
		got, err := c.resolve("path", tc.in)
		if connect.CodeOf(err) != tc.code && !(tc.code == 0 && err == nil) || got != tc.want {
			t.Errorf("resolve %q: %q, %v; want %q (code %v)", tc.in, got, err, tc.want, tc.code)
		}
	}
}

func TestEntryPermissions(t *testing.T) {
	for _, tc := range []struct {
		t    fsbv1.FileType
		mode uint32
		want string
	}{
		{fsbv1.FileType_FILE_TYPE_FILE, 0o644, "-rw-r--r--"},
		{fsbv1.FileType_FILE_TYPE_DIRECTORY, 0o755, "drwxr-xr-x"},
		{fsbv1.FileType_FILE_TYPE_SYMLINK, 0o777, "Lrwxrwxrwx"},
		{fsbv1.FileType_FILE_TYPE_DIRECTORY, 0o1777, "dtrwxrwxrwx"},
		{fsbv1.FileType_FILE_TYPE_FILE, 0o4755, "urwxr-xr-x"},
		{fsbv1.FileType_FILE_TYPE_OTHER, 0o600, "?rw-------"},
	} {
		if got := entryPermissions(tc.t, tc.mode); got != tc.want {
			t.Errorf("entryPermissions(%v, %#o) = %q, want %q", tc.t, tc.mode, got, tc.want)
		}
	}
}

func TestParseAccounts(t *testing.T) {
	acc := &sandboxAccounts{users: map[string]passwdUser{}, owners: map[uint32]string{}, groups: map[uint32]string{}}
	parseAccounts(acc,
		[]byte("# comment\nroot:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/bash\nbroken:x:zz:1::/:/bin/sh\nalias:x:1000:1000::/elsewhere:/bin/sh\n"),
		[]byte("root:x:0:\nuser:x:1000:\n"))
	if u := acc.users["user"]; u.uid != 1000 || u.gid != 1000 || u.home != "/home/user" {
		t.Errorf("user: %+v", u)
	}
	if _, ok := acc.users["broken"]; ok {
		t.Error("a line with a bad uid was read")
	}
	if acc.owner(1000) != "user" || acc.group(1000) != "user" || acc.owner(7) != "7" || acc.group(7) != "7" {
		t.Errorf("owners %v, groups %v: the first name of an ID wins, unknown IDs are numbers", acc.owners, acc.groups)
	}
}
