# cmake -DOUT=file -DIN="a|b|c" -P concat_licences.cmake: the licences of the embedded
# charting library, one after another, each under its source path's package name.
file(WRITE ${OUT} "Third-party code embedded in the moerun dashboard (/vendor/echarts.min.js)\n")
string(REPLACE "|" ";" files "${IN}")
foreach(f IN LISTS files)
  get_filename_component(dir ${f} DIRECTORY)
  get_filename_component(pkg ${dir} NAME)
  get_filename_component(name ${f} NAME)
  file(READ ${f} text)
  file(APPEND ${OUT} "\n==== ${pkg}/${name} ====\n\n${text}")
endforeach()
