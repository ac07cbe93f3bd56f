package runtime

import "testing"

func TestLogRevisionParsesOnlyThatSandboxsFiles(t *testing.T) {
	for _, tc := range []struct {
		file string
		rev  int64
		ok   bool
	}{
		{"sb-a-1.log", 1, true},
		{"sb-a-12.log", 12, true},
		{"sb-a-3.log.1", 3, true},
		{"sb-a-3.log.10", 3, true},
		{"sb-a-1-3.log", 0, false}, // sandbox sb-a-1's
		{"sb-ab-3.log", 0, false},
		{"sb-a-.log", 0, false},
		{"sb-a-0.log", 0, false},
		{"sb-a-3.log.", 0, false},
		{"sb-a-3.log.x", 0, false},
		{"sb-a-3.logx", 0, false},
		{"sb-a-3.txt", 0, false},
		{"sb-a-3", 0, false},
		{"other-3.log", 0, false},
	} {
		rev, ok := logRevision(tc.file, "sb-a")
		if rev != tc.rev || ok != tc.ok {
			t.Errorf("logRevision(%q, sb-a) = %d, %v; want %d, %v", tc.file, rev, ok, tc.rev, tc.ok)
		}
	}
}

func TestParseLogName(t *testing.T) {
	for _, tc := range []struct {
		file string
		id   string
		rev  int64
		ok   bool
	}{
		{"sb-a-1.log", "sb-a", 1, true},
		{"sb-a-1-3.log.2", "sb-a-1", 3, true},
		{"x-12.log", "x", 12, true},
		{"-1.log", "", 0, false},
		{"sb-0.log", "", 0, false},
		{"sb-a.log", "", 0, false},
		{"sb-1.log.x", "", 0, false},
		{"sb-1.txt", "", 0, false},
		{"sb-1.log.log", "", 0, false},
	} {
		id, rev, ok := ParseLogName(tc.file)
		if ok != tc.ok || ok && (id != tc.id || rev != tc.rev) {
			t.Errorf("ParseLogName(%q) = %q, %d, %v; want %q, %d, %v", tc.file, id, rev, ok, tc.id, tc.rev, tc.ok)
		}
	}
}
