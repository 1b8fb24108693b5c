/* sensorlib: asynchronous transfers on a sensor's connection, modelled on
 * libusb's asynchronous I/O API (libusb_alloc_transfer,
 * libusb_submit_transfer, libusb_cancel_transfer, libusb_free_transfer).
 *
 * Where it differs from libusb, on purpose: it runs its own event thread
 * (libusb leaves that thread to the application), and it calls every callback
 * with the device's lock held (libusb does not). */
#ifndef SENSORLIB_H
#define SENSORLIB_H

/* ANCHOR: api */
typedef struct sensor_device sensor_device;
typedef struct sensor_transfer sensor_transfer;

/* Called once per submitted transfer, on the device's event thread, with
 * the device's lock held: it must not call sensor_submit_transfer,
 * sensor_cancel_transfer or sensor_close. It may free the transfer. */
typedef void (*sensor_transfer_cb)(sensor_transfer *transfer);

enum sensor_transfer_status {
    SENSOR_TRANSFER_COMPLETED = 0, /* the whole buffer was read or written */
    SENSOR_TRANSFER_ERROR = 1,     /* the connection failed or closed */
    SENSOR_TRANSFER_CANCELLED = 2, /* sensor_cancel_transfer took effect */
    SENSOR_TRANSFER_NO_DEVICE = 3, /* sensor_close ended it */
};

enum sensor_direction { SENSOR_IN = 0, SENSOR_OUT = 1 };

enum sensor_error {
    SENSOR_SUCCESS = 0,
    SENSOR_ERROR_INVALID_PARAM = -2,
    SENSOR_ERROR_NO_DEVICE = -4, /* the device is closing */
    SENSOR_ERROR_NOT_FOUND = -5, /* not in flight: done, or cancel already asked */
    SENSOR_ERROR_BUSY = -6,      /* already submitted */
};

struct sensor_transfer {
    sensor_device *device;
    int direction;          /* SENSOR_IN or SENSOR_OUT */
    unsigned char *buffer;  /* the library's from submit until the callback */
    int length;
    int actual_length;      /* set before the callback */
    int status;             /* set before the callback */
    sensor_transfer_cb callback;
    void *user_data;        /* the library never looks at it */
    /* The library's own. */
    int state_;
    sensor_transfer *next_;
};

/* Starts the device's event thread on a connected socket (which the device
 * borrows and makes non-blocking). NULL on failure. */
sensor_device *sensor_open(int fd);
/* Ends every transfer in flight with SENSOR_TRANSFER_NO_DEVICE (their
 * callbacks run first), stops the event thread and frees the device. */
void sensor_close(sensor_device *device);

sensor_transfer *sensor_alloc_transfer(void);
void sensor_free_transfer(sensor_transfer *transfer); /* not while in flight */
int sensor_submit_transfer(sensor_transfer *transfer);
int sensor_cancel_transfer(sensor_transfer *transfer);
/* ANCHOR_END: api */

/* A test hook: sensor_submit_transfer waits this long after it has queued
 * the transfer and before it returns, so the event thread can finish the
 * transfer while it is being submitted. */
void sensor_debug_set_submit_delay(sensor_device *device, unsigned microseconds);

#endif
