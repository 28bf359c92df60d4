// A Vulkan driver (ICD) shim for tests/spirv.py: it forwards everything to the driver named by
// $SPIRV_DUMP_DRIVER (lavapipe) and writes each SPIR-V module it is given to $SPIRV_DUMP_DIR/NNN.spv,
// so that a test can read what naga made of a kernel. Types are declared by hand (no Vulkan headers).
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*Function)(void);
typedef Function (*GetProcAddr)(void *, const char *);
typedef int (*CreateShaderModule)(void *, const void *, const void *, void *);
typedef int (*Negotiate)(uint32_t *);

struct ShaderModuleCreateInfo {  // VkShaderModuleCreateInfo
  uint32_t sType;
  const void *pNext;
  uint32_t flags;
  size_t codeSize;
  const uint32_t *pCode;
};

static void *driver;
static GetProcAddr driver_instance_proc;
static GetProcAddr driver_device_proc;
static CreateShaderModule driver_create_shader_module;
static int modules;

static void *load(const char *name) {
  if (!driver) driver = dlopen(getenv("SPIRV_DUMP_DRIVER"), RTLD_NOW);
  return driver ? dlsym(driver, name) : NULL;
}

static int create_shader_module(void *device, const void *info, const void *allocator, void *module) {
  const struct ShaderModuleCreateInfo *create = info;
  const char *dir = getenv("SPIRV_DUMP_DIR");
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%03d.spv", dir, modules++);
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(create->pCode, 1, create->codeSize, f);
      fclose(f);
    }
  }
  return driver_create_shader_module(device, info, allocator, module);
}

static Function device_proc(void *device, const char *name) {
  Function found = driver_device_proc(device, name);
  if (!strcmp(name, "vkCreateShaderModule")) {
    driver_create_shader_module = (CreateShaderModule)found;
    return (Function)create_shader_module;
  }
  if (!strcmp(name, "vkGetDeviceProcAddr")) return (Function)device_proc;
  return found;
}

Function vk_icdGetInstanceProcAddr(void *instance, const char *name) {
  if (!driver_instance_proc) driver_instance_proc = (GetProcAddr)load("vk_icdGetInstanceProcAddr");
  Function found = driver_instance_proc(instance, name);
  if (!strcmp(name, "vkGetDeviceProcAddr")) {
    driver_device_proc = (GetProcAddr)found;
    return (Function)device_proc;
  }
  if (!strcmp(name, "vkGetInstanceProcAddr")) return (Function)vk_icdGetInstanceProcAddr;
  return found;
}

int vk_icdNegotiateLoaderICDInterfaceVersion(uint32_t *version) {
  Negotiate negotiate = (Negotiate)load("vk_icdNegotiateLoaderICDInterfaceVersion");
  return negotiate ? negotiate(version) : -3;  // VK_ERROR_INITIALIZATION_FAILED
}

Function vk_icdGetPhysicalDeviceProcAddr(void *instance, const char *name) {
  GetProcAddr get = (GetProcAddr)load("vk_icdGetPhysicalDeviceProcAddr");
  return get ? get(instance, name) : NULL;
}
