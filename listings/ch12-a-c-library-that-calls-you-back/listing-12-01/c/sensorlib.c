/* sensorlib's implementation: one event thread per device completes every
 * transfer, and runs every callback with the device's lock held. */
#define _GNU_SOURCE
#include "sensorlib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum { IDLE = 0, IN_FLIGHT = 1, CANCELLING = 2 };

struct sensor_device {
    int fd;
    int wake[2]; /* a pipe: writing a byte wakes the event thread */
    pthread_mutex_t lock;
    pthread_t thread;
    int closing;
    unsigned submit_delay_us;
    sensor_transfer *queue[2]; /* in flight, oldest first, per direction */
};

static void wake_event_thread(sensor_device *dev) {
    char byte = 1;
    (void)!write(dev->wake[1], &byte, 1); /* a full pipe is awake enough */
}

static void unlink_transfer(sensor_transfer *t) {
    sensor_transfer **at = &t->device->queue[t->direction];
    while (*at != t) at = &(*at)->next_;
    *at = t->next_;
    t->next_ = NULL;
}

/* ANCHOR: complete */
/* Called on the event thread, with the device's lock held. */
static void complete(sensor_transfer *t, int status) {
    unlink_transfer(t);
    t->state_ = IDLE;
    t->status = status;
    t->callback(t); /* still holding dev->lock; t may be freed in there */
}
/* ANCHOR_END: complete */

static void complete_all(sensor_device *dev, int state, int status) {
    for (int d = 0; d < 2; d++) {
        sensor_transfer *t = dev->queue[d];
        while (t) {
            sensor_transfer *next = t->next_; /* t may be gone after complete */
            if (state < 0 || t->state_ == state) complete(t, status);
            t = next;
        }
    }
}

/* Moves bytes for the oldest transfer of each direction, as far as the
 * socket allows without blocking; completes the transfers that are done. */
static void make_progress(sensor_device *dev) {
    sensor_transfer *t;
    while ((t = dev->queue[SENSOR_IN])) {
        if (t->actual_length == t->length) { complete(t, SENSOR_TRANSFER_COMPLETED); continue; }
        ssize_t n = recv(dev->fd, t->buffer + t->actual_length,
                         (size_t)(t->length - t->actual_length), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { complete(t, SENSOR_TRANSFER_ERROR); continue; }
        t->actual_length += (int)n;
    }
    while ((t = dev->queue[SENSOR_OUT])) {
        if (t->actual_length == t->length) { complete(t, SENSOR_TRANSFER_COMPLETED); continue; }
        ssize_t n = send(dev->fd, t->buffer + t->actual_length,
                         (size_t)(t->length - t->actual_length), MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { complete(t, SENSOR_TRANSFER_ERROR); continue; }
        t->actual_length += (int)n;
    }
}

/* ANCHOR: event_thread */
static void *event_thread(void *arg) {
    sensor_device *dev = arg;
    pthread_mutex_lock(&dev->lock);
    for (;;) {
        if (dev->closing) {
            complete_all(dev, -1, SENSOR_TRANSFER_NO_DEVICE);
            break;
        }
        complete_all(dev, CANCELLING, SENSOR_TRANSFER_CANCELLED);
        make_progress(dev);
        struct pollfd fds[2] = {
            {.fd = dev->wake[0], .events = POLLIN},
            {.fd = dev->fd,
             .events = (short)((dev->queue[SENSOR_IN] ? POLLIN : 0) |
                               (dev->queue[SENSOR_OUT] ? POLLOUT : 0))},
        };
        pthread_mutex_unlock(&dev->lock); /* the only place it lets go */
        poll(fds, fds[1].events ? 2 : 1, -1);
        if (fds[0].revents & POLLIN) {
            char drain[64];
            (void)!read(dev->wake[0], drain, sizeof drain);
        }
        pthread_mutex_lock(&dev->lock);
    }
    pthread_mutex_unlock(&dev->lock);
    return NULL;
}
/* ANCHOR_END: event_thread */

sensor_device *sensor_open(int fd) {
    sensor_device *dev = calloc(1, sizeof *dev);
    if (!dev) return NULL;
    dev->fd = fd;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
        pipe2(dev->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(dev);
        return NULL;
    }
    pthread_mutex_init(&dev->lock, NULL); /* a plain mutex: not recursive */
    if (pthread_create(&dev->thread, NULL, event_thread, dev) != 0) {
        close(dev->wake[0]);
        close(dev->wake[1]);
        pthread_mutex_destroy(&dev->lock);
        free(dev);
        return NULL;
    }
    pthread_setname_np(dev->thread, "sensorlib-event");
    return dev;
}

void sensor_close(sensor_device *dev) {
    pthread_mutex_lock(&dev->lock);
    dev->closing = 1;
    wake_event_thread(dev);
    pthread_mutex_unlock(&dev->lock);
    pthread_join(dev->thread, NULL);
    close(dev->wake[0]);
    close(dev->wake[1]);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

sensor_transfer *sensor_alloc_transfer(void) {
    return calloc(1, sizeof(sensor_transfer));
}

void sensor_free_transfer(sensor_transfer *transfer) { free(transfer); }

/* ANCHOR: submit */
int sensor_submit_transfer(sensor_transfer *t) {
    sensor_device *dev = t->device;
    if (!dev || !t->callback || t->length < 0 ||
        (t->direction != SENSOR_IN && t->direction != SENSOR_OUT))
        return SENSOR_ERROR_INVALID_PARAM;
    pthread_mutex_lock(&dev->lock); /* a callback on this thread: deadlock */
    if (t->state_ != IDLE) {
        pthread_mutex_unlock(&dev->lock);
        return SENSOR_ERROR_BUSY;
    }
    if (dev->closing) {
        pthread_mutex_unlock(&dev->lock);
        return SENSOR_ERROR_NO_DEVICE;
    }
    t->actual_length = 0;
    t->state_ = IN_FLIGHT;
    sensor_transfer **at = &dev->queue[t->direction];
    while (*at) at = &(*at)->next_;
    *at = t;
    wake_event_thread(dev);
    unsigned delay = dev->submit_delay_us;
    pthread_mutex_unlock(&dev->lock);
    /* From here on the event thread may complete t, and the callback may
     * free it: t is not touched again. */
    if (delay) usleep(delay);
    return SENSOR_SUCCESS;
}

int sensor_cancel_transfer(sensor_transfer *t) {
    sensor_device *dev = t->device;
    pthread_mutex_lock(&dev->lock);
    if (t->state_ != IN_FLIGHT) {
        pthread_mutex_unlock(&dev->lock);
        return SENSOR_ERROR_NOT_FOUND;
    }
    t->state_ = CANCELLING; /* the event thread completes it, CANCELLED */
    wake_event_thread(dev);
    pthread_mutex_unlock(&dev->lock);
    return SENSOR_SUCCESS;
}
/* ANCHOR_END: submit */

void sensor_debug_set_submit_delay(sensor_device *dev, unsigned microseconds) {
    pthread_mutex_lock(&dev->lock);
    dev->submit_delay_us = microseconds;
    pthread_mutex_unlock(&dev->lock);
}
