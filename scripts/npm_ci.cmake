# cmake -DNPM=npm -DSRC=dir-with-package-lock -DDEST=dir "-DHINT=what to do offline" -P npm_ci.cmake
# Installs exactly what SRC/package-lock.json pins (versions and integrity hashes) into
# DEST/node_modules, for the build. A failure (no network, a registry that refuses) stops the
# build with npm's output and HINT, rather than with a bare non-zero exit.
file(MAKE_DIRECTORY ${DEST})
file(COPY ${SRC}/package.json ${SRC}/package-lock.json DESTINATION ${DEST})
execute_process(
  COMMAND ${NPM} ci --prefix ${DEST} --ignore-scripts --no-audit --no-fund --loglevel=error
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "npm ci for ${SRC}/package-lock.json failed (exit ${rc}):\n${err}${out}\n"
                      "Is the npm registry reachable from this machine? ${HINT}")
endif()
