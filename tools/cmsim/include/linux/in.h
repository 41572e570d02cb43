/* SPDX-License-Identifier: GPL-2.0 */
/* cmsim: provided by ../../shim.h */
