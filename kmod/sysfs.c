// SPDX-License-Identifier: GPL-2.0
/*
 * Per-device attributes under /sys/class/mmapdev/mmapdevN/: size (bytes),
 * maps (live mappings, all processes), events (WAKE calls + heartbeats).
 *
 * size is world-readable: it says no more than the size parameter, which
 * is.  maps and events are root's only: they change with every mapping and
 * every WAKE, so whoever reads them learns when and how often the
 * device's users map it and signal each other, a timing side channel into
 * a device whose node (0600 by default) denies that reader everything
 * else.  Users who may open the node read the events through GET_INFO.
 */
#include <linux/device.h>
#include <linux/kernel.h>
#include <linux/sysfs.h>

#include "compat.h"
#include "mmapdev_internal.h"

/**
 * size_show() - the attribute size: the buffer's size in bytes
 * @dev: the device node
 * @attr: the attribute
 * @buf: a page to print into
 *
 * Context: process context (sysfs read).
 * Return: the length printed.
 */
static ssize_t size_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct mmapdev_dev *md = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%zu\n", md->size);
}
static DEVICE_ATTR_RO(size);

/**
 * maps_show() - the attribute maps: how many VMAs map the buffer, in all processes
 * @dev: the device node
 * @attr: the attribute
 * @buf: a page to print into
 *
 * Context: process context (sysfs read).
 * Return: the length printed.
 */
static ssize_t maps_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct mmapdev_dev *md = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%d\n", atomic_read(&md->maps));
}
static DEVICE_ATTR_ADMIN_RO(maps);

/**
 * events_show() - the attribute events: the event counter (WAKE calls + heartbeats)
 * @dev: the device node
 * @attr: the attribute
 * @buf: a page to print into
 *
 * Context: process context (sysfs read).
 * Return: the length printed.
 */
static ssize_t events_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct mmapdev_dev *md = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&md->events));
}
static DEVICE_ATTR_ADMIN_RO(events);

static struct attribute *mmapdev_attrs[] = {
	&dev_attr_size.attr,
	&dev_attr_maps.attr,
	&dev_attr_events.attr,
	NULL,
};

static const struct attribute_group mmapdev_group = {
	.attrs = mmapdev_attrs,
};

const struct attribute_group *mmapdev_groups[] = {
	&mmapdev_group,
	NULL,
};
