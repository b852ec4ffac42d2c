package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tokenService and tokenIssuer name the token server in the registry's
// configuration and in the tokens it signs.
const (
	tokenService = "registrytest"
	tokenIssuer  = "registrytest-token-server"
)

// tokenServer is the Docker token authentication server of a registry
// started with Options.TokenAuth: it checks HTTP basic credentials
// against the Htpasswd users and signs JWTs granting the scopes asked
// for, which docker-registry verifies against the server's certificate.
type tokenServer struct {
	users   map[string]string
	key     *ecdsa.PrivateKey
	certDER []byte
	url     string // the realm: http://127.0.0.1:PORT/token
	issued  atomic.Int64
}

// newTokenServer makes a token server whose realm is url (served by the
// registry's counting proxy: go-containerregistry accepts a loopback
// realm only on the registry's own host and port) and writes its
// certificate (the registry's rootcertbundle) to certPath.
func newTokenServer(t testing.TB, users map[string]string, certPath, url string) *tokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("registrytest: token key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: tokenIssuer},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("registrytest: token certificate: %v", err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return &tokenServer{users: users, key: key, certDER: der, url: url}
}

// serve answers GET /token?service=&scope=... (the Docker token flow)
// and POST /token with a password grant (the OAuth2 flow).
func (s *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	var scopes []string
	if r.Method == http.MethodPost {
		r.ParseForm()
		if r.PostForm.Get("grant_type") == "password" {
			user, pass, ok = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		}
		scopes = strings.Fields(r.PostForm.Get("scope"))
	} else {
		scopes = r.URL.Query()["scope"]
	}
	want, known := s.users[user]
	if !ok || !known || want != pass {
		w.Header().Set("WWW-Authenticate", `Basic realm="registrytest-token"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	tok, err := s.sign(user, scopes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300,
		"issued_at": time.Now().UTC().Format(time.RFC3339)})
}

// sign returns a JWT (ES256, with the certificate in x5c) granting user
// every action of the scopes ("repository:NAME:pull,push").
func (s *tokenServer) sign(user string, scopes []string) (string, error) {
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, sc := range scopes {
		parts := strings.Split(sc, ":")
		if len(parts) < 3 {
			continue
		}
		grants = append(grants, access{Type: parts[0], Name: strings.Join(parts[1:len(parts)-1], ":"),
			Actions: strings.Split(parts[len(parts)-1], ",")})
	}
	now := time.Now()
	jti := make([]byte, 8)
	rand.Read(jti)
	header, _ := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(s.certDER)}})
	claims, _ := json.Marshal(map[string]any{"iss": tokenIssuer, "sub": user, "aud": tokenService,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": fmt.Sprintf("%x", jti), "access": grants})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", errors.New("registrytest: signing a token: " + err.Error())
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}
