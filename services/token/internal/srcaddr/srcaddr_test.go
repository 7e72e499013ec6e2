package srcaddr

import "testing"

func TestResolve(t *testing.T) {
	r, err := New([]string{"10.0.0.0/8", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:5000", nil, "192.0.2.1"},
		{"192.0.2.1:5000", []string{"198.51.100.1"}, "192.0.2.1"},    // untrusted peer: its XFF is ignored
		{"127.0.0.1:5000", []string{"198.51.100.1"}, "198.51.100.1"}, // trusted edge
		{"127.0.0.1:5000", []string{"203.0.113.9, 198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"127.0.0.1:5000", []string{"garbage"}, "127.0.0.1"},
		{"127.0.0.1:5000", nil, "127.0.0.1"},
		{"[::ffff:192.0.2.7]:1", nil, "192.0.2.7"},
		{"not an address", nil, ""},
	} {
		if got := r.Resolve(c.peer, c.xff); got != c.want {
			t.Errorf("Resolve(%q, %q) = %q, want %q", c.peer, c.xff, got, c.want)
		}
	}
	if _, err := New([]string{"bogus"}); err == nil {
		t.Error("bogus CIDR accepted")
	}
}
