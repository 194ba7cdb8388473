// Package usermgr is a peer's user manager: it installs the cluster's SSH
// users on the machine. For each user of the set it creates a missing Linux
// user (useradd) and writes its authorized keys, ~/.ssh/authorized_keys
// (0600 in a 0700 .ssh, owned by the user, written atomically); each user
// it manages that is not in the set, it locks (usermod: password locked,
// account expired, shell nologin; keys emptied), never deletes, so no file
// is lost. A user added back is unlocked.
//
// It only ever touches the accounts it made: the members of the group
// fabric-users with a UID from MinUID to MaxUID. An account of the same
// name that exists otherwise (root, a system account, a local user) is left
// alone and reported.
//
// The user owns ~/.ssh, so the manager writes there through the home
// directory opened as an os.Root (OpenHomeFs): no symlink can lead its
// writes out of the home.
//
// It works on an afero.Fs, so tests run it on a memory file system with
// usermgrtest.NewLinuxUserManagerFake. Applying the same set twice changes
// nothing: no write, no useradd.
package usermgr
