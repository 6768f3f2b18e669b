// SPDX-License-Identifier: GPL-2.0
/*
 * Per-device attributes under /sys/class/mmapdev/mmapdevN/: size (bytes),
 * maps (live mappings, all processes), events (WAKE calls + heartbeats).
 */
#include <linux/device.h>
#include <linux/kernel.h>
#include <linux/sysfs.h>

#include "compat.h"
#include "mmapdev_internal.h"

static ssize_t size_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct mmapdev_dev *md = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%zu\n", md->size);
}
static DEVICE_ATTR_RO(size);

static ssize_t maps_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct mmapdev_dev *md = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%d\n", atomic_read(&md->maps));
}
static DEVICE_ATTR_RO(maps);

static ssize_t events_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct mmapdev_dev *md = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&md->events));
}
static DEVICE_ATTR_RO(events);

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
