// Package sshuserstest makes SSH public keys for tests.
package sshuserstest

import (
	"bytes"
	"crypto/ed25519"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Key returns the authorized_keys line of the ed25519 public key made from
// a seed filled with seed, with comment (none if empty).
func Key(seed byte, comment string) string {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		panic(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line
}

// Fingerprint returns the SHA-256 fingerprint of Key(seed, ...).
func Fingerprint(seed byte) string {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(Key(seed, "")))
	if err != nil {
		panic(err)
	}
	return ssh.FingerprintSHA256(pub)
}

// Fixed keys of other types, made with ssh-keygen.
const (
	RSA2048 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCk3o7P/m+s9fxicfBpbAKuGNfdKno5qyNQ8iJpvQnU5t0V0CH8Ez6s7YdcXCaQJg5oCjWjW7WLbWMXdXMyPdxK9d1S2yyG/yNqrFCwTtOXf/OfXKwwYs9w/jwTOk5QHnV+1wYHSITyl/4SdVj4576s7Koufga7hs5JY6LUjOemoXO+fL071RNpQ30gzWzKAzkychHvZ58BKqsbWwW8TMrD1SgSdazGIbFE66/7OEepSGz8bBhjIMqQAYsPgiVXst+W248NTUYtvL70eQjDVfDF5O+hIAY1HR0lrj8T3wggo8M81UQNjJX81UAYJkWh/jNHAtxfvEYvNKA1xim7N0iF carol@rsa"
	// RSA2048Fingerprint is what ssh-keygen -l prints for RSA2048.
	RSA2048Fingerprint = "SHA256:C4GvrioeOja31wjoG3qWCYhmQhdb1dNIOjrFUXip4OA"
	RSA1024            = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC0KVYMfgu2ftGFtX3xbeLGIWegbdeo2nt9djSDuWNjUXTgE3jtp3t8uObNHKJytB/KV2IQI649wCiGfKIChfmtuBT630JHNCC/EE+y2y9LIkJJa2czofzF3dUjIrNSaekSiN2tIHGbYZSqvNOBGMHp28+bnRblFqyHAJH4IHRH6w== old@rsa"
	DSA                = "ssh-dss AAAAB3NzaC1kc3MAAACBANmsrWgzwMT3AU2l4R+Advv8UPdTcZY+1uLCgzOGKP7xnv0Pa48ibLqiLqwiuDkvWlH+8X6KbeX+wUMylb3KzuB890hkZaUgdu7CrPhlCSY/K94KJv5FVSTj4rcYAD2CSgpJlijtJ9vGl0XDSDTEnhP81tvCsT1w32YV8LSW/koDAAAAFQDBtTaTZTtZOothZFyD1NkuBV8sswAAAIAWH9u2uVLryVNlRMOtb6tzPoKAnuSzvJSZSRz/Kfoza0wJ5sNkgA2Kllnuv1eZdvJ90uwAQfpqpQ9uS7HUdVUt8cnD5GYu07guC6fE5Wx8vXw0BI/WqMHXK/e/IGf3OrUDiteiJEKASNNwP3YK7wuGGoiAqmfJc7PpJp+JY1wEQAAAAIEArNEW/vOeRkFUyP3ZKaimdOMjoZ0pXvmmOexgF+YhL27rV9Ux+5dVVxPD4tYcwyqu8I7EvtidT1UvIoeY6rk0IhFBVKKICuHTgRjjhJt5+i0/uo2gacWU4Ba3yt5t6H/K+4hnV7Md84FSwHFNR6MO/FzhiYENhIMFc9mHVb9N0+s= old@dsa"
	ECDSA256           = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHYX3Wb0G5EyEVZYNhIMbLJrZk7B71FMe8WcqwYPhEOd1qONe5c369I2m5Oe0XvgfELL0SnEfOgfoF/3nMM9oQk= dave@ecdsa"
)
