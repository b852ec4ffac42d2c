package digester

import (
	"errors"
	"strings"
	"testing"
)

func TestKnownVectors(t *testing.T) {
	cases := []struct {
		algo Algorithm
		data string
		want string
	}{
		{Blake3, "", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{Blake3, "abc", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
		{Sha256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{Sha256, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, c := range cases {
		if got := Sum(c.algo, []byte(c.data)).String(); got != c.want {
			t.Errorf("Sum(%v, %q) = %s, want %s", c.algo, c.data, got, c.want)
		}
		h := New(c.algo)
		h.Write([]byte(c.data))
		var d Digest
		copy(d[:], h.Sum(nil))
		if d.String() != c.want {
			t.Errorf("New(%v) over %q = %s, want %s", c.algo, c.data, d, c.want)
		}
		p, err := ParseDigest(c.want)
		if err != nil || p.String() != c.want {
			t.Errorf("ParseDigest(%s) = %s, %v", c.want, p, err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, a := range []Algorithm{Blake3, Sha256} {
		got, err := ParseAlgorithm(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", a.String(), got, err)
		}
	}
	if _, err := ParseAlgorithm("Blake3"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ParseAlgorithm(Blake3) = %v", err)
	}
	if Algorithm(2).String() != "Algorithm(2)" || Algorithm(2).Valid() {
		t.Error("unknown algorithm")
	}
	if _, err := ParseDigest("abc"); err == nil || !strings.Contains(err.Error(), "length 3") {
		t.Errorf("ParseDigest short: %v", err)
	}
	if _, err := ParseDigest(strings.Repeat("zz", 32)); err == nil {
		t.Error("ParseDigest accepted non-hex")
	}
	if !(Digest{}).IsZero() || Sum(Sha256, nil).IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestPanicsOnUnknown(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Sum did not panic")
		}
	}()
	Sum(Algorithm(5), nil)
}
