package usermgr

import (
	"io/fs"
	"syscall"
)

// owner returns the owner of a file, if the file system tells it (the OS
// does; afero's memory file system does not).
func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
