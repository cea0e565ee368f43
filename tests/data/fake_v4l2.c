/*
 * An emulated V4L2 camera for tests, loaded with LD_PRELOAD into the box process only.
 *
 * These machines have no v4l2loopback or vivid kernel module, so there is no /dev/video*
 * device to unplug. This library plays the kernel driver's part for ONE path, named by
 * AIRSYNC_FAKE_V4L2_DEVICE (an absolute path), so that the real v4l2src (gst-plugins-good
 * 1.22, with libv4l2 off, its default) captures from it through its ordinary libc calls.
 * Everything above the driver -- v4l2src, its buffer pool, the box -- is the real code.
 *
 * The device is plugged in while that path exists (the test creates it as a regular file)
 * and unplugged when the test deletes it. As with a real USB camera, an open file of an
 * unplugged device is dead for good: poll reports POLLERR|POLLHUP and every ioctl fails with
 * ENODEV, even once the device is back, so capture resumes only through a new open().
 *
 * One format: YUYV 640x480 at 30 fps, MMAP streaming I/O, a white bar moving over grey.
 * Frames come at the camera's own pace (frame k at streamon + k/30 s, monotonic timestamps,
 * sequence k); a frame that finds no queued buffer is dropped, as a camera does.
 *
 * The open file is a memfd, so mmap/munmap of the buffers need no interception: the kernel
 * maps the memfd, and this library writes each frame into its own mapping of it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define WIDTH 640
#define HEIGHT 480
#define FPS 30
#define FRAME_BYTES (WIDTH * HEIGHT * 2)
/* Buffer offsets are page-aligned, as the kernel's are. */
#define FRAME_STRIDE ((FRAME_BYTES + 4095) & ~4095)
#define PERIOD_NS (1000000000LL / FPS)
#define MAX_BUFFERS 8
#define MAX_FILES 8
#define MAX_FDS 4096
/* How often a wait (in DQBUF or poll) looks again whether the device was unplugged. */
#define SLICE_NS 20000000LL

/* One open() of the device; dup()ed fds share it, like a kernel `struct file`. */
struct file {
	int refs; /* fds that refer to it; 0 = slot free */
	int dead; /* saw the device unplugged */
	unsigned nbuf;
	uint64_t queued[MAX_BUFFERS]; /* queue order (1, 2, ...); 0 = not queued */
	uint64_t queue_seq;
	int streaming;
	int64_t t0;        /* monotonic ns at STREAMON */
	int64_t last;      /* index of the last frame delivered */
	unsigned char *map; /* our own mapping of the buffers, to draw into */
	size_t map_len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct file files[MAX_FILES];
/* fd -> 1 + index in files, 0 for fds that are not the device. Read without the lock on the
 * fast path: an fd number cannot be closed and reopened while a call on it is running. */
static int fd_file[MAX_FDS];
static int open_files;

/* The next definition of a libc function (dlsym caches nothing itself). */
static void *next_sym(const char *name, void **cache)
{
	void *f = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
	if (!f) {
		f = dlsym(RTLD_NEXT, name);
		__atomic_store_n(cache, f, __ATOMIC_RELEASE);
	}
	return f;
}
#define REAL(name) ({ static void *cache_; (__typeof__(&name))next_sym(#name, &cache_); })

static const char *device_path(void)
{
	static const char *path;
	if (!path) {
		const char *p = getenv("AIRSYNC_FAKE_V4L2_DEVICE");
		path = p && p[0] == '/' ? p : "";
	}
	return path;
}

static int is_device(const char *path)
{
	return path && device_path()[0] && strcmp(path, device_path()) == 0;
}

/* Plugged in while the test's marker file exists. access() is not intercepted. */
static int plugged(void)
{
	return access(device_path(), F_OK) == 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct file *file_of(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return NULL;
	int i = __atomic_load_n(&fd_file[fd], __ATOMIC_ACQUIRE);
	return i ? &files[i - 1] : NULL;
}

static int fail(int err)
{
	errno = err;
	return -1;
}

/* ---- open, dup, close: which fds are the device ---- */

static int open_device(int flags)
{
	if (!plugged())
		return fail(ENOENT);
	int fd = memfd_create("airsync-fake-video", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
	if (fd < 0)
		return -1;
	pthread_mutex_lock(&lock);
	int slot = -1;
	for (int i = 0; i < MAX_FILES && slot < 0; i++)
		if (!files[i].refs)
			slot = i;
	if (slot < 0 || fd >= MAX_FDS) {
		pthread_mutex_unlock(&lock);
		REAL(close)(fd);
		return fail(EMFILE);
	}
	memset(&files[slot], 0, sizeof files[slot]);
	files[slot].refs = 1;
	__atomic_add_fetch(&open_files, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&fd_file[fd], slot + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	return fd;
}

/* The mode argument exists only when the flags create a file. A macro, because va_start must
 * run in the variadic function itself. */
#define MODE_ARG(flags) ({ \
	mode_t mode_ = 0; \
	if ((flags) & (O_CREAT | O_TMPFILE)) { \
		va_list ap; \
		va_start(ap, flags); \
		mode_ = va_arg(ap, mode_t); \
		va_end(ap); \
	} \
	mode_; })

/* v4l2src calls open64(); `open` is the same function under its other name. Nothing opens the
 * device with openat(), so that is left alone. */
int open64(const char *path, int flags, ...)
{
	mode_t mode = MODE_ARG(flags);
	if (is_device(path))
		return open_device(flags);
	return REAL(open64)(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
	mode_t mode = MODE_ARG(flags);
	if (is_device(path))
		return open_device(flags);
	return REAL(open)(path, flags, mode);
}

/* v4l2src's buffer pool works on a dup() of the device fd. It duplicates fds no other way, so
 * fcntl(F_DUPFD) and dup2/dup3 are left alone. */
int dup(int fd)
{
	int copy = REAL(dup)(fd);
	struct file *f = file_of(fd);
	if (copy < 0 || !f)
		return copy;
	if (copy >= MAX_FDS) {
		REAL(close)(copy);
		return fail(EMFILE);
	}
	pthread_mutex_lock(&lock);
	f->refs++;
	__atomic_store_n(&fd_file[copy], (int)(f - files) + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	return copy;
}

int close(int fd)
{
	struct file *f = file_of(fd);
	if (f) {
		pthread_mutex_lock(&lock);
		__atomic_store_n(&fd_file[fd], 0, __ATOMIC_RELEASE);
		if (--f->refs == 0) {
			if (f->map)
				munmap(f->map, f->map_len);
			__atomic_sub_fetch(&open_files, 1, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&lock);
	}
	return REAL(close)(fd);
}

/* ---- stat: the path is a character device (v4l2src refuses anything else) ---- */

static void as_char_device(const char *path, struct stat *st)
{
	if (is_device(path)) {
		st->st_mode = S_IFCHR | 0660;
		st->st_rdev = makedev(81, 0); /* video4linux's major */
		st->st_size = 0;
	}
}

/* v4l2src calls stat64() and refuses a path that is not S_ISCHR; `stat` is the same function
 * under its other name (both exported since glibc 2.33). statx is left alone: the box's own
 * check (Rust's Path::exists) only asks whether the path exists, and the marker file does. */
int stat64(const char *path, struct stat64 *st)
{
	int r = REAL(stat64)(path, st);
	if (r == 0)
		as_char_device(path, (struct stat *)st);
	return r;
}

int stat(const char *path, struct stat *st)
{
	int r = REAL(stat)(path, st);
	if (r == 0)
		as_char_device(path, st);
	return r;
}

/* ---- the driver ---- */

/* The oldest queued buffer, or -1. */
static int oldest_queued(struct file *f)
{
	int best = -1;
	for (unsigned i = 0; i < f->nbuf; i++)
		if (f->queued[i] && (best < 0 || f->queued[i] < f->queued[best]))
			best = (int)i;
	return best;
}

/* 0 when a frame can be dequeued now, else how long until one can (at most SLICE_NS). */
static int64_t frame_wait(struct file *f, int64_t now)
{
	if (oldest_queued(f) < 0)
		return SLICE_NS;
	int64_t due = f->t0 + (f->last + 1) * PERIOD_NS;
	if (now >= due)
		return 0;
	return due - now < SLICE_NS ? due - now : SLICE_NS;
}

static void fill_buffer(struct file *f, unsigned i, struct v4l2_buffer *b)
{
	b->index = i;
	b->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	b->memory = V4L2_MEMORY_MMAP;
	b->m.offset = i * FRAME_STRIDE;
	b->length = FRAME_BYTES;
	b->field = V4L2_FIELD_NONE;
	b->flags = V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | V4L2_BUF_FLAG_TSTAMP_SRC_EOF |
		   (f->queued[i] ? V4L2_BUF_FLAG_QUEUED : 0);
}

/* YUYV grey with a white bar 32 pixels wide that moves 8 pixels a frame. */
static void draw(unsigned char *p, int64_t k)
{
	static unsigned char row[WIDTH * 2];
	int bar = (int)((k * 8) % WIDTH);
	for (int x = 0; x < WIDTH; x++) {
		int lit = x >= bar && x < bar + 32;
		row[2 * x] = lit ? 235 : 90;
		row[2 * x + 1] = 128;
	}
	for (int y = 0; y < HEIGHT; y++)
		memcpy(p + y * WIDTH * 2, row, sizeof row);
}

/* The one frame that is due, into the oldest queued buffer. Frames nobody had a buffer for
 * are skipped: the sequence number jumps, as it does when a camera drops frames. */
static void deliver(struct file *f, int64_t now, struct v4l2_buffer *b)
{
	int i = oldest_queued(f);
	int64_t k = (now - f->t0) / PERIOD_NS;
	f->last = k;
	f->queued[i] = 0;
	draw(f->map + (size_t)i * FRAME_STRIDE, k);
	int64_t ts = f->t0 + k * PERIOD_NS;
	fill_buffer(f, (unsigned)i, b);
	b->bytesused = FRAME_BYTES;
	b->sequence = (uint32_t)k;
	b->timestamp.tv_sec = ts / 1000000000LL;
	b->timestamp.tv_usec = (ts % 1000000000LL) / 1000;
}

static void set_format(struct v4l2_pix_format *pix)
{
	memset(pix, 0, sizeof *pix);
	pix->width = WIDTH;
	pix->height = HEIGHT;
	pix->pixelformat = V4L2_PIX_FMT_YUYV;
	pix->field = V4L2_FIELD_NONE;
	pix->bytesperline = WIDTH * 2;
	pix->sizeimage = FRAME_BYTES;
	pix->colorspace = V4L2_COLORSPACE_SRGB;
}

static int reqbufs(int fd, struct file *f, struct v4l2_requestbuffers *r)
{
	if (r->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || r->memory != V4L2_MEMORY_MMAP)
		return fail(EINVAL);
	if (f->streaming)
		return fail(EBUSY);
	r->capabilities = V4L2_BUF_CAP_SUPPORTS_MMAP;
	r->flags = 0;
	if (f->map)
		munmap(f->map, f->map_len);
	f->map = NULL;
	f->nbuf = 0;
	memset(f->queued, 0, sizeof f->queued);
	if (r->count == 0)
		return 0;
	unsigned n = r->count < 2 ? 2 : r->count > MAX_BUFFERS ? MAX_BUFFERS : r->count;
	size_t len = (size_t)n * FRAME_STRIDE;
	/* Never shrunk: buffers of an earlier request may still be mapped by the caller. */
	struct stat st;
	if (fstat(fd, &st) < 0 || ((size_t)st.st_size < len && ftruncate(fd, (off_t)len) < 0))
		return fail(ENOMEM);
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return fail(ENOMEM);
	f->map = map;
	f->map_len = len;
	f->nbuf = n;
	r->count = n;
	return 0;
}

/* Blocks until a frame is due, as DQBUF does on a device opened without O_NONBLOCK: v4l2src's
 * case, and the only one emulated. It polls first, so in practice it does not wait here. */
static int dqbuf(struct file *f, struct v4l2_buffer *b)
{
	if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->memory != V4L2_MEMORY_MMAP)
		return fail(EINVAL);
	for (;;) {
		pthread_mutex_lock(&lock);
		if (!plugged())
			f->dead = 1;
		if (f->dead || !f->streaming) {
			int err = f->dead ? ENODEV : EINVAL;
			pthread_mutex_unlock(&lock);
			return fail(err);
		}
		int64_t now = now_ns();
		int64_t wait = frame_wait(f, now);
		if (wait == 0) {
			deliver(f, now, b);
			pthread_mutex_unlock(&lock);
			return 0;
		}
		pthread_mutex_unlock(&lock);
		struct timespec ts = {0, wait};
		nanosleep(&ts, NULL);
	}
}

/* Called with the lock held. Unknown requests get ENOTTY, as from a driver without them. */
static int driver_ioctl(int fd, struct file *f, unsigned long req, void *arg)
{
	if (!plugged())
		f->dead = 1;
	/* What the V4L2 core answers once a device is unregistered. */
	if (f->dead)
		return fail(ENODEV);
	switch (req) {
	case VIDIOC_QUERYCAP: {
		struct v4l2_capability *c = arg;
		memset(c, 0, sizeof *c);
		strcpy((char *)c->driver, "airsync-fake");
		strcpy((char *)c->card, "AirSync emulated camera");
		strcpy((char *)c->bus_info, "platform:airsync-fake");
		c->version = (6 << 16) | (1 << 8);
		c->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
		c->capabilities = c->device_caps | V4L2_CAP_DEVICE_CAPS;
		return 0;
	}
	case VIDIOC_ENUMINPUT: {
		struct v4l2_input *in = arg;
		if (in->index != 0)
			return fail(EINVAL);
		memset(in, 0, sizeof *in);
		strcpy((char *)in->name, "Camera");
		in->type = V4L2_INPUT_TYPE_CAMERA;
		return 0;
	}
	case VIDIOC_G_INPUT:
		*(int *)arg = 0;
		return 0;
	case VIDIOC_S_INPUT:
		return *(int *)arg == 0 ? 0 : fail(EINVAL);
	case VIDIOC_ENUM_FMT: {
		struct v4l2_fmtdesc *d = arg;
		if (d->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || d->index != 0)
			return fail(EINVAL);
		uint32_t index = d->index, type = d->type;
		memset(d, 0, sizeof *d);
		d->index = index;
		d->type = type;
		strcpy((char *)d->description, "YUYV 4:2:2");
		d->pixelformat = V4L2_PIX_FMT_YUYV;
		return 0;
	}
	case VIDIOC_ENUM_FRAMESIZES: {
		struct v4l2_frmsizeenum *s = arg;
		if (s->index != 0 || s->pixel_format != V4L2_PIX_FMT_YUYV)
			return fail(EINVAL);
		s->type = V4L2_FRMSIZE_TYPE_DISCRETE;
		s->discrete.width = WIDTH;
		s->discrete.height = HEIGHT;
		return 0;
	}
	case VIDIOC_ENUM_FRAMEINTERVALS: {
		struct v4l2_frmivalenum *v = arg;
		if (v->index != 0 || v->pixel_format != V4L2_PIX_FMT_YUYV || v->width != WIDTH ||
		    v->height != HEIGHT)
			return fail(EINVAL);
		v->type = V4L2_FRMIVAL_TYPE_DISCRETE;
		v->discrete.numerator = 1;
		v->discrete.denominator = FPS;
		return 0;
	}
	case VIDIOC_G_FMT:
	case VIDIOC_S_FMT:
	case VIDIOC_TRY_FMT: {
		/* The one format, whatever was asked: a driver adjusts the request to what it has. */
		struct v4l2_format *fmt = arg;
		if (fmt->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
			return fail(EINVAL);
		if (req == VIDIOC_S_FMT && f->nbuf)
			return fail(EBUSY);
		set_format(&fmt->fmt.pix);
		return 0;
	}
	case VIDIOC_G_PARM:
	case VIDIOC_S_PARM: {
		struct v4l2_streamparm *p = arg;
		if (p->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
			return fail(EINVAL);
		memset(&p->parm.capture, 0, sizeof p->parm.capture);
		p->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
		p->parm.capture.timeperframe.numerator = 1;
		p->parm.capture.timeperframe.denominator = FPS;
		return 0;
	}
	case VIDIOC_REQBUFS:
		return reqbufs(fd, f, arg);
	case VIDIOC_QUERYBUF:
	case VIDIOC_QBUF: {
		struct v4l2_buffer *b = arg;
		if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->memory != V4L2_MEMORY_MMAP ||
		    b->index >= f->nbuf)
			return fail(EINVAL);
		if (req == VIDIOC_QBUF) {
			if (f->queued[b->index])
				return fail(EINVAL);
			f->queued[b->index] = ++f->queue_seq;
		}
		fill_buffer(f, b->index, b);
		return 0;
	}
	case VIDIOC_STREAMON:
	case VIDIOC_STREAMOFF:
		if (*(int *)arg != V4L2_BUF_TYPE_VIDEO_CAPTURE || f->nbuf == 0)
			return fail(EINVAL);
		if (req == VIDIOC_STREAMON && !f->streaming) {
			f->streaming = 1;
			f->t0 = now_ns();
			f->last = -1;
		} else if (req == VIDIOC_STREAMOFF) {
			/* Like vb2: streaming stops and every buffer returns to the caller. */
			f->streaming = 0;
			memset(f->queued, 0, sizeof f->queued);
		}
		return 0;
	default:
		return fail(ENOTTY);
	}
}

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	struct file *f = file_of(fd);
	if (!f)
		return REAL(ioctl)(fd, req, arg);
	/* DQBUF may wait for the next frame, so it takes the lock itself. */
	if (req == VIDIOC_DQBUF)
		return dqbuf(f, arg);
	pthread_mutex_lock(&lock);
	int r = driver_ioctl(fd, f, req, arg);
	int err = errno;
	pthread_mutex_unlock(&lock);
	errno = err;
	return r;
}

/* ---- poll: when a frame is due, and the unplug ---- */

/* What the kernel's v4l2/vb2 poll reports, or 0 with *wait set to when to look again.
 * Called with the lock held. */
static short device_events(struct file *f, short want, int64_t now, int64_t *wait)
{
	if (!plugged())
		f->dead = 1;
	/* An unregistered video device (v4l2_poll): this is how v4l2src learns of an unplug. */
	if (f->dead)
		return POLLERR | POLLHUP | (want & POLLPRI);
	/* vb2_core_poll: nothing to wait for while not streaming. */
	if (!f->streaming)
		return POLLERR;
	int64_t w = frame_wait(f, now);
	if (w == 0)
		return want & (POLLIN | POLLRDNORM);
	if (w < *wait)
		*wait = w;
	return 0;
}

/* GstPoll waits on the device fd with ppoll(). A memfd is always readable, so the device's
 * entries are taken out of the real call (events 0) and answered here, while the real call
 * still waits on the other fds (GstPoll's wake-up fd, which it uses to flush). */
int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask)
{
	if (!__atomic_load_n(&open_files, __ATOMIC_RELAXED) || n > 64)
		return REAL(ppoll)(fds, n, timeout, mask);
	short want[64];
	int ours = 0;
	for (nfds_t i = 0; i < n; i++) {
		want[i] = fds[i].events;
		if (file_of(fds[i].fd))
			ours++;
	}
	if (!ours)
		return REAL(ppoll)(fds, n, timeout, mask);
	int64_t deadline = timeout ? now_ns() + timeout->tv_sec * 1000000000LL + timeout->tv_nsec : -1;
	for (;;) {
		int64_t wait = SLICE_NS, now = now_ns();
		int ready = 0;
		pthread_mutex_lock(&lock);
		for (nfds_t i = 0; i < n; i++) {
			struct file *f = file_of(fds[i].fd);
			if (f) {
				ready += device_events(f, want[i], now, &wait) != 0;
				fds[i].events = 0;
			}
		}
		pthread_mutex_unlock(&lock);
		if (ready)
			wait = 0;
		if (deadline >= 0 && deadline - now < wait)
			wait = deadline - now > 0 ? deadline - now : 0;
		struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
		int r = REAL(ppoll)(fds, n, &ts, mask);
		int err = errno;
		now = now_ns();
		pthread_mutex_lock(&lock);
		for (nfds_t i = 0; i < n; i++) {
			struct file *f = file_of(fds[i].fd);
			fds[i].events = want[i];
			if (f) {
				int64_t unused = SLICE_NS;
				fds[i].revents = device_events(f, want[i], now, &unused);
				if (r >= 0 && fds[i].revents)
					r++;
			}
		}
		pthread_mutex_unlock(&lock);
		if (r != 0 || (deadline >= 0 && now >= deadline)) {
			errno = err;
			return r;
		}
	}
}
